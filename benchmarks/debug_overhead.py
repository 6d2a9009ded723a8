"""What the live debugging modes cost a training step, side by side.

In one process (1 intra-op thread), each configuration trains the same model for STEPS steps,
round-robin over REPEATS rounds so all see the same machine load; printed are the medians of
the per-step wall and thread CPU time and their ratio to the plain loop:

* ``plain``: no hooks;
* ``anomaly``: dsprof's NaN/Inf check of every op output (``dsprof run --detect-anomaly``);
* ``trace-filtered``: DEBUG tracing with a filter that selects no op (the dispatch mode and
  module tracking alone; what a filtered trace costs on the ops it skips);
* ``trace-all``: DEBUG tracing of every op, written to a log file (plus the check, as at DEBUG);
* ``torch-anomaly``: ``torch.autograd.detect_anomaly()`` (records a Python stack for every
  forward op, checks backward outputs).

Two models: ``mlp`` (4 Linear layers, 1024 wide, batch 32: compute-bound ops) and ``tiny``
(the same at width 64: ~4 us ops, where a per-op cost shows most).

Usage: python benchmarks/debug_overhead.py [--steps 20] [--repeats 3] [--models mlp,tiny]
Timings on a shared 2-core machine vary by +-20 % between runs; read ratios near 1.1 as noise.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsprof.collectors.dispatch_watch import DispatchWatcher
from dsprof.collectors.trace_filter import TraceFilter
from dsprof.log import logger


def make(width: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width // 2, width), nn.ReLU(), nn.Linear(width, width),
                          nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(32, width // 2), torch.randint(0, 10, (32,))

    def step() -> None:
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class Watching(AbstractContextManager):
    def __init__(self, trace: bool, check: bool, flt: str, raw: Path):
        self.w = DispatchWatcher(trace=trace, check=check, trace_filter=TraceFilter.parse(flt),
                                 alloc_bytes=1 << 20, raw_dir=raw, rank=0,
                                 now_ns=time.perf_counter_ns)

    def __enter__(self):
        self.w.start()
        return self

    def __exit__(self, *exc):
        self.w.stop()


def configs(raw: Path) -> dict[str, Callable[[], AbstractContextManager]]:
    return {
        "plain": nullcontext,
        "anomaly": lambda: Watching(False, True, "", raw),
        "trace-filtered": lambda: Watching(True, False, "op:no_such_op", raw),
        "trace-all": lambda: Watching(True, True, "", raw),
        "torch-anomaly": lambda: torch.autograd.detect_anomaly(),
    }


def measure(step: Callable[[], None], ctx: Callable[[], AbstractContextManager],
            steps: int) -> tuple[float, float]:
    """Median (wall ms, thread CPU ms) per step."""
    walls, cpus = [], []
    with ctx():
        step()  # warm-up: first-call costs (mode setup, Adam state)
        for _ in range(steps):
            w0, c0 = time.perf_counter(), time.thread_time()
            step()
            walls.append((time.perf_counter() - w0) * 1e3)
            cpus.append((time.thread_time() - c0) * 1e3)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="mlp,tiny")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "Anomaly Detection has been enabled")
    widths = {"mlp": 1024, "tiny": 64}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        # DEBUG lines go to a file, as in a run's dsprof.log; stderr would measure the terminal.
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        handler = logging.FileHandler(raw / "dsprof.log")
        logger.addHandler(handler)
        cfgs = configs(raw)
        for model in args.models.split(","):
            step = make(widths[model])
            results: dict[str, list[tuple[float, float]]] = {c: [] for c in cfgs}
            for _ in range(args.repeats):
                for name, ctx in cfgs.items():
                    results[name].append(measure(step, ctx, args.steps))
            base_w = statistics.median(r[0] for r in results["plain"])
            base_c = statistics.median(r[1] for r in results["plain"])
            lines = (raw / "dsprof.log").read_text().count("\n")
            print(f"\n{model} (width {widths[model]}), {args.steps} steps x {args.repeats} "
                  f"rounds, medians; {lines} trace lines written")
            print(f"{'config':<16}{'wall ms/step':>13}{'x plain':>9}{'CPU ms/step':>13}"
                  f"{'x plain':>9}")
            for name, rs in results.items():
                w = statistics.median(r[0] for r in rs)
                c = statistics.median(r[1] for r in rs)
                print(f"{name:<16}{w:>13.2f}{w / base_w:>9.2f}{c:>13.2f}{c / base_c:>9.2f}")
            ta = [statistics.median(r[k] for r in results["torch-anomaly"]) for k in (0, 1)]
            da = [statistics.median(r[k] for r in results["anomaly"]) for k in (0, 1)]
            print(f"dsprof anomaly check / torch.autograd.detect_anomaly: {da[0] / ta[0]:.2f}x "
                  f"wall, {da[1] / ta[1]:.2f}x CPU")
        logger.removeHandler(handler)
        handler.close()


if __name__ == "__main__":
    main()
