"""What the outermost-forward watch costs an inference loop (collectors/modules.py).

An inference run's steps come from the module annotator's global forward pre/post hooks, on
for the whole run when it never trains. Any global module hook sends every module call
through torch's slower hooked call path; this prints, per module call, that path's own cost
(two empty hooks) and dsprof's hooks' (watching outermost calls, outside a window), in thread
CPU time (stable under load), A/B/C alternating in one process.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/forward_steps_hooks.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from dsprof.collectors.modules import ModuleAnnotator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=32, help="(Linear 64, ReLU) blocks")
    ap.add_argument("--forwards", type=int, default=300, help="forwards per measurement")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.ReLU())
                            for _ in range(args.blocks)]).eval()
    x = torch.randn(8, 64)
    calls = sum(1 for _ in model.modules())

    def cpu_us_per_forward() -> float:
        with torch.inference_mode():
            t = time.thread_time_ns()
            for _ in range(args.forwards):
                model(x)
            return (time.thread_time_ns() - t) / args.forwards / 1e3

    def empty_hooks() -> list:
        return [register_module_forward_pre_hook(lambda m, a: None),
                register_module_forward_hook(lambda m, a, o: None, always_call=True)]

    annotator = ModuleAnnotator()
    seen = [0]
    cpu_us_per_forward()  # warm-up
    res: dict[str, list[float]] = {"plain": [], "empty hooks": [], "dsprof watch": []}
    for _ in range(args.rounds):
        res["plain"].append(cpu_us_per_forward())
        handles = empty_hooks()
        res["empty hooks"].append(cpu_us_per_forward())
        for h in handles:
            h.remove()
        annotator.watch_outermost(lambda m: seen.__setitem__(0, seen[0] + 1))
        res["dsprof watch"].append(cpu_us_per_forward())
        annotator.stop_watching()
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"{calls} module calls per forward, {args.rounds} rounds of {args.forwards} forwards, "
          f"median thread CPU per forward:")
    for k, v in med.items():
        extra = v - med["plain"]
        print(f"  {k:<13} {v:8.1f} us  (+{extra:6.1f} us, {extra * 1e3 / calls:5.0f} ns a "
              f"module call, {100 * extra / med['plain']:4.0f} %)")
    assert seen[0] == args.rounds * args.forwards


if __name__ == "__main__":
    main()
