"""Host memory bandwidth, measured once at session start, for the fusion analyzer.

Fusing a chain of pointwise ops saves the bytes its intermediates move through memory; turning
bytes into seconds needs the bandwidth this process actually gets, with its thread count, on
this (often shared) machine. A copy of a 32 MiB float32 tensor (larger than the caches of the
CPUs this runs on, so it measures DRAM) is timed a few times and the fastest is kept: the
result is ``bytes read + bytes written`` per second, the same accounting the analyzer uses for
an op. It takes about 20-50 ms, at session start (the end of the script's ``import torch``).
"""

from __future__ import annotations

import time
from typing import Any

_ELEMENTS = 8 << 20  # float32 -> 32 MiB per tensor
_REPEATS = 5


def measure_host_bandwidth() -> dict[str, Any]:
    """``{"bytes_per_s", "bytes", "threads", "method"}`` for meta.json's ``host_bandwidth``."""
    import torch

    src = torch.ones(_ELEMENTS, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults are not bandwidth
    best = float("inf")
    for _ in range(_REPEATS):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    moved = 2 * src.numel() * src.element_size()
    return {"bytes_per_s": round(moved / best), "bytes": moved,
            "threads": torch.get_num_threads(), "method": "tensor copy, best of 5"}
