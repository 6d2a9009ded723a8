"""What handing a batch from a DataLoader worker process to the training process costs on this
CPU: the calibration of ``analyzers/input_pipeline.py``'s ``RECEIVE_*`` and ``SEND_*``.

    OMP_NUM_THREADS=1 python benchmarks/dataloader_handoff_cpu.py

A worker moves each tensor of a batch into shared memory and sends its handle; the training
process maps each one back. Both cost time that loading in the training process does not pay,
per batch and per tensor. For batches of 1-8 tensors of 32 rows x 64-65536 float32, a
DataLoader over a dataset that builds the tensors is iterated with nothing else to do:

- in-process (``num_workers=0``): the load itself, per batch;
- one persistent worker: the training thread's CPU time per batch (what it pays to receive),
  and the wall time per batch, which the worker bounds (load + send: the worker's cost).

Then least squares, on the relative error, of ``receive = a + b x tensors + c x bytes`` and ``send = worker wall - load
= d + e x tensors + f x bytes``, and each shape's fit. Nothing is asserted: the figures are this
machine's (print ``uptime`` beside them).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ROWS = 32


class Tensors(Dataset):
    """Each item: ``k`` float32 tensors of ``width``."""

    def __init__(self, k: int, width: int) -> None:
        self.k, self.width = k, width

    def __len__(self) -> int:
        return ROWS * 48

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(torch.full((self.width,), float(i)) for _ in range(self.k))


def per_batch(loader: DataLoader, passes: int = 3) -> tuple[float, float]:
    """Median over ``passes`` of (wall s, training-thread CPU s) per batch."""
    walls, cpus = [], []
    for _ in range(passes):
        n = 0
        t, c = time.perf_counter(), time.thread_time()
        for _batch in loader:
            n += 1
        walls.append((time.perf_counter() - t) / n)
        cpus.append((time.thread_time() - c) / n)
    return statistics.median(walls), statistics.median(cpus)


def measure(k: int, width: int) -> dict:
    data = Tensors(k, width)
    load, _ = per_batch(DataLoader(data, batch_size=ROWS))
    loader = DataLoader(data, batch_size=ROWS, num_workers=1, persistent_workers=True)
    for _batch in loader:  # start the worker
        pass
    wall, receive = per_batch(loader)
    return {"tensors": k, "bytes": k * ROWS * width * 4, "load": load, "receive": receive,
            "send": max(0.0, wall - load)}


def fit(rows: list[dict], target: str) -> np.ndarray:
    """Least squares on the relative error: small batches, the common case, weigh as much as
    large ones."""
    x = np.array([[1.0, r["tensors"], r["bytes"]] for r in rows])
    y = np.array([r[target] for r in rows])
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)
    return coef


def main() -> None:
    torch.set_num_threads(1)
    rows = [measure(k, w) for k in (1, 2, 4, 8) for w in (64, 16384, 65536)]
    print(f"{'tensors':>7} {'KiB':>7} {'load us':>8} {'receive us':>10} {'send us':>8}")
    for r in rows:
        print(f"{r['tensors']:>7} {r['bytes'] / 1024:>7.0f} {r['load'] * 1e6:>8.0f} "
              f"{r['receive'] * 1e6:>10.0f} {r['send'] * 1e6:>8.0f}")
    for target in ("receive", "send"):
        a, b, c = fit(rows, target)
        print(f"\n{target} = {a * 1e6:.0f} us a batch + {b * 1e6:.0f} us a tensor + "
              f"{c * 1e9:.3f} ns a byte")
        for r in rows:
            pred = a + b * r["tensors"] + c * r["bytes"]
            print(f"  {r['tensors']} x {r['bytes'] / r['tensors'] / 1024:.0f} KiB: "
                  f"{r[target] * 1e6:.0f} us, fit {(pred / r[target] - 1) * 100:+.0f} %")


if __name__ == "__main__":
    main()
