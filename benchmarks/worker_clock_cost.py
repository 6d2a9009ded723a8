"""What sampling the DataLoader workers' clocks costs the training thread
(``dsprof/collectors/worker_clock.py``).

Every ``__next__`` of a loader with workers asks the sampler whether to sample this wait (a
clock read and a comparison); at most once every ``SAMPLE_EVERY_NS`` (0.25 s) it reads each
worker's ``/proc/<pid>/schedstat`` before and after the wait. For a real DataLoader with 1, 2,
4 and 8 worker processes, this prints, side by side:

- the training thread's CPU time of one unsampled ask, and of one sampled wait's readings
  (both sides, every worker), least of ``-n`` repeats of ``--calls`` calls each;
- what the sampled readings cost at the cap (4 a second) as a share of one core, and a fetched
  batch's own CPU time on the training thread for scale (``--batch`` rows of 64 floats).

    python benchmarks/worker_clock_cost.py [-n 5] [--calls 2000]

Nothing is asserted: the figures are this machine's (print ``uptime`` beside them).
"""

from __future__ import annotations

import argparse
import warnings

import torch
from _cpu_time import cpu_per_call  # benchmarks/: the script's own folder
from torch.utils.data import DataLoader, TensorDataset

from dsprof.collectors.worker_clock import SAMPLE_EVERY_NS, WorkerSampler, WorkerTimes


def measure(workers: int, calls: int, repeats: int, batch: int) -> tuple[float, float, float]:
    """(unsampled ask s, sampled wait's readings s, one batch's fetch s) for ``workers``."""
    data = TensorDataset(torch.randn(batch * 64, 64), torch.randint(0, 10, (batch * 64,)))
    loader = DataLoader(data, batch_size=batch, num_workers=workers, persistent_workers=True)
    it = iter(loader)
    next(it)  # the workers are up
    sampler = WorkerSampler()
    sampler.before(it)  # sets the last sample's time: the asks below are not sampled
    unsampled = cpu_per_call(lambda: sampler.before(it), calls, repeats)

    def sampled() -> None:
        fresh = WorkerSampler()  # no sample yet: this one reads every worker
        start = fresh.before(it)
        assert start is not None, "schedstat unreadable: not Linux, or no schedstat"
        WorkerSampler.after(start, WorkerTimes())

    readings = cpu_per_call(sampled, calls, repeats)

    def fetch() -> None:
        nonlocal it
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)

    per_batch = cpu_per_call(fetch, min(calls, 200), repeats)
    return unsampled, readings, per_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5, help="repeats (least is kept)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per repeat")
    parser.add_argument("--batch", type=int, default=32, help="rows of a batch")
    args = parser.parse_args()
    # torch warns past its suggested worker count (the CPUs): 8 workers on 2 cores is the point
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    per_s = 1e9 / SAMPLE_EVERY_NS
    print(f"training thread CPU, least of {args.n} x {args.calls} calls; sampled at most "
          f"{per_s:.0f} times a second")
    print(f"{'workers':>7}  {'ask, unsampled':>15}  {'sampled wait':>13}  "
          f"{'share of a core at the cap':>27}  {'a batch fetched':>16}  {'ask / batch':>11}")
    for workers in (1, 2, 4, 8):
        unsampled, readings, per_batch = measure(workers, args.calls, args.n, args.batch)
        print(f"{workers:>7}  {unsampled * 1e9:>12.0f} ns  {readings * 1e6:>10.1f} us  "
              f"{readings * per_s * 100:>26.4f}%  {per_batch * 1e6:>13.1f} us  "
              f"{unsampled / per_batch * 100:>10.3f}%")


if __name__ == "__main__":
    main()
