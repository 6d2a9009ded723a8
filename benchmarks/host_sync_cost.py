"""What the host-sync collector costs a value read (``dsprof/collectors/host_sync.py``).

Every ``t.item()``, ``if t:``, ``float(t)`` and ``int(t)`` of a run goes through dsprof's
wrapper while the collector is installed (the whole run). For a one-value CPU tensor (the
cheapest read there is: on a GPU each of these waits for the device, tens of microseconds at
least), this prints side by side the thread CPU time of one read plainly and under the
collector, least of ``-n`` repeats of ``--calls`` reads each:

- from the script's own line (counted; the line's site is kept after its first read);
- from the same line 40 frames deep (a framework's stack: the first read walks it);
- printing a tensor (``repr``, counted once) whose printing reads it dozens of times from torch's
  own files (not counted: the wrapper hands over after a frame check);
- ``float()`` of a tensor that requires grad (the path that gives torch's warning the
  script's line).

    python benchmarks/host_sync_cost.py [-n 5] [--calls 20000]

Nothing is asserted: the figures are this machine's (print ``uptime`` beside them).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import torch
from _cpu_time import cpu_per_call  # benchmarks/: the script's own folder

from dsprof.collectors.host_sync import HostSyncCollector


def _deep(depth: int, fn: Callable[[], object]) -> object:
    return fn() if depth == 0 else _deep(depth - 1, fn)


def cases() -> dict[str, Callable[[], object]]:
    x = torch.tensor(3.0)
    grad = torch.tensor(2.0, requires_grad=True)
    # repr(t) is one counted print, and the dozens of bool()/float()/item() reads torch's
    # printing makes inside it come from torch's own files: each passes the frame check
    return {
        "bool(t), the script's line": lambda: bool(x),
        "float(t), the script's line": lambda: float(x),
        "int(t), the script's line": lambda: int(x),
        "t.item(), the script's line": lambda: x.item(),
        "bool(t), 40 frames deep": lambda: _deep(40, lambda: bool(x)),
        "repr(t), torch's reads inside": lambda: repr(x),
        "float(t), t requires grad": lambda: float(grad),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=5, help="repeats; the least is printed")
    p.add_argument("--calls", type=int, default=20000)
    args = p.parse_args()
    warnings.simplefilter("ignore")  # float() of a tensor that requires grad warns
    torch.set_num_threads(1)
    print(f"{'read':30s} {'plain':>10s} {'collector':>10s} {'added':>9s}")
    for name, fn in cases().items():
        plain = cpu_per_call(fn, args.calls, args.n)
        collector = HostSyncCollector(lambda: 1)
        collector.install()
        try:
            profiled = cpu_per_call(fn, args.calls, args.n)
        finally:
            collector.uninstall()
        print(f"{name:30s} {plain * 1e9:8.0f} ns {profiled * 1e9:8.0f} ns "
              f"{(profiled - plain) * 1e9:7.0f} ns")


if __name__ == "__main__":
    main()
