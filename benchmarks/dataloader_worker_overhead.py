"""What dsprof costs a DataLoader worker: plain vs `dsprof run`, side by side.

A training loop's DataLoader forks its workers at the first batch, which falls inside dsprof's
bootstrap capture of step 0; a worker is a copy of that process (collectors/forked_child.py).
This runs one loop plain and under `dsprof run` alternately (PAIRS pairs) and prints, from
inside the worker:

* the CPU time of a sample (``time.thread_time`` around ``__getitem__``: three pooling and noise
  passes over a 64x64 tensor, 11 small tensor ops), median over the pairs, and its ratio;
* the worker's memory growth (VmRSS) from sample 2,000 to the last one, and its ratio: a worker
  that recorded what it ran into a copy of the profiler grew with every op.

Usage: python benchmarks/dataloader_worker_overhead.py [--pairs 3] [--samples 24000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, sys, time, torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

OUT, SAMPLES = sys.argv[1], int(sys.argv[2])


def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


class Augmented(Dataset):
    def __init__(self):
        self.cpu, self.n, self.start = 0.0, 0, None

    def __len__(self):
        return SAMPLES

    def __getitem__(self, i):
        t = time.thread_time()
        g = torch.Generator().manual_seed(i)
        x = torch.randn(64, 64, generator=g)
        for _ in range(3):
            x = torch.nn.functional.avg_pool2d(x[None, None], 3, 1, 1)[0, 0]
            x = x + 0.01 * torch.randn(64, 64, generator=g)
        self.cpu += time.thread_time() - t
        self.n += 1
        if self.n == 2000:
            self.start = rss_kb()
        if self.n == SAMPLES:
            with open(OUT, "w") as f:
                f.write(f"{self.cpu / self.n * 1e6} {rss_kb() - self.start}")
        return x.flatten()[:1024], i % 10


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=1e-2)
for x, y in DataLoader(Augmented(), batch_size=64, num_workers=1):
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
"""


def one(tmp: Path, profiled: bool, samples: int, k: int) -> tuple[float, float]:
    out = tmp / f"{'dsprof' if profiled else 'plain'}-{k}.txt"
    script = tmp / "loop.py"
    cmd = [sys.executable, str(script), str(out), str(samples)]
    if profiled:
        cmd = [sys.executable, "-m", "dsprof", "run", "-q", "-o", str(tmp / f"run-{k}"),
               str(script), str(out), str(samples)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, cwd=tmp)
    us, grew_kb = out.read_text().split()
    return float(us), float(grew_kb)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--samples", type=int, default=24000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsprof-worker-") as t:
        tmp = Path(t)
        (tmp / "loop.py").write_text(SCRIPT)
        plain, prof = [], []
        for k in range(args.pairs):  # interleaved: both arms see the same machine load
            plain.append(one(tmp, False, args.samples, k))
            prof.append(one(tmp, True, args.samples, k))
    p_us, d_us = (statistics.median(r[0] for r in rows) for rows in (plain, prof))
    p_kb, d_kb = (statistics.median(r[1] for r in rows) for rows in (plain, prof))
    print(f"worker sample CPU time: plain {p_us:.1f} us, dsprof {d_us:.1f} us, "
          f"ratio {d_us / p_us:.2f}x (median of {args.pairs} pairs)")
    print(f"worker memory growth over {args.samples - 2000} samples: plain {p_kb / 1024:.1f} MiB, "
          f"dsprof {d_kb / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
