"""Copies a 64 MiB host batch to the GPU every step, from pageable memory or (``--pinned``)
from pinned memory with ``non_blocking=True``: the input_pipeline analyzer's pageable-copy
advice on a real device. The model is small, so the copy is most of the step."""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--pinned", action="store_true")
    p.add_argument("--out", default=None, help="unused; every probe takes it")
    args = p.parse_args()
    batch = torch.randn(16 << 20)  # 64 MiB of fp32
    if args.pinned:
        batch = batch.pin_memory()
    model = torch.nn.Linear(1024, 1024).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(args.steps):
        x = batch.to("cuda", non_blocking=args.pinned).view(-1, 1024)
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
