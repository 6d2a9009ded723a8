"""Cost of the metric sampler: microseconds per sample and share of one core at a given period.

It times ``MetricSampler.sample()`` (psutil CPU + RSS, plus NVML when this machine has an
NVIDIA GPU and nvidia-ml-py) N times in a loop and prints the median, and what that costs at
the default period (``DSPROF_SAMPLE_MS`` = 100) and at 10 ms.

    .venv/bin/python benchmarks/sampler_cost.py [-n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dsprof.collectors.device import detect, nvml_bus_id
from dsprof.collectors.samples import MetricSampler, NvmlReader


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    args = ap.parse_args()
    device = detect()
    if device.is_accelerator:
        import torch

        torch.cuda.init()  # no script to wait for here: read the device's facts now
        device.settle()
    gpu = None
    if device.kind == "cuda":
        gpu, why = NvmlReader.open(nvml_bus_id(device), device.index)
        if gpu is None:
            print(f"NVML: {why}")
    sampler = MetricSampler(1.0, Path(tempfile.mkdtemp()), time.perf_counter_ns, gpu)
    sampler.sample()
    times = []
    for _ in range(args.n):
        t0 = time.perf_counter_ns()
        sampler.sample()
        times.append(time.perf_counter_ns() - t0)
    med_us = statistics.median(times) / 1e3
    what = "host + NVML" if gpu is not None else "host only (no NVIDIA GPU / NVML)"
    print(f"sampler, {what}: median {med_us:.1f} us per sample over {args.n} samples")
    for period_ms in (100, 10):
        print(f"  at {period_ms:3d} ms: {100 * med_us / (period_ms * 1e3):.3f} % of one core")


if __name__ == "__main__":
    main()
