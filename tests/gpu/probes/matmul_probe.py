"""A large bf16 matmul loop whose achieved FLOP/s the script measures itself (CUDA events).

Each step runs ``--per-step`` products of two n x n bf16 matrices, synchronizes, and marks a
step boundary with ``dsprof.step()`` when dsprof is running (a no-op otherwise). The hand
figure per step is FLOPs (2 n^3 per product) over the events' elapsed time, written to
``--out``/probe.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def mark_step() -> None:
    try:
        import dsprof
    except ImportError:
        return
    dsprof.step()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--per-step", type=int, default=20)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    a = torch.randn(args.n, args.n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(args.n, args.n, device="cuda", dtype=torch.bfloat16)
    rows = []
    for i in range(args.steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.per_step):
            torch.mm(a, b)  # the result is dropped; the allocator reuses its block
        end.record()
        torch.cuda.synchronize()
        mark_step()
        rows.append({"step": i, "flops": 2 * args.n ** 3 * args.per_step,
                     "elapsed_s": start.elapsed_time(end) / 1e3})
    (args.out / "probe.json").write_text(json.dumps({"device": torch.cuda.get_device_name(),
                                                     "steps": rows}))


if __name__ == "__main__":
    main()
