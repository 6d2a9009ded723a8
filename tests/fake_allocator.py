"""torch's CUDA caching allocator counters, for tests on a machine without a GPU.

Only the four ``torch._C`` functions through which torch's Python reads and resets the counters
are replaced (``_cuda_memoryStats``, ``_cuda_resetPeakMemoryStats`` and their
``torch.accelerator`` twins), with the nested layout torch returns; everything above them
(``torch.cuda.memory_stats``, ``max_memory_allocated``, ``memory_summary``) is torch's own code.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

POOLS = ("all", "small_pool", "large_pool")
BYTE_STATS = ("allocated_bytes", "reserved_bytes", "active_bytes", "requested_bytes")


class FakeAllocator:
    """Counters per device; :meth:`alloc` / :meth:`free` move them as torch's allocator does."""

    def __init__(self) -> None:
        self.current: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.device = 0

    def alloc(self, nbytes: int, device: int | None = None) -> None:
        d = self.device if device is None else device
        self.current[d] = self.current.get(d, 0) + nbytes
        self.peak[d] = max(self.peak.get(d, 0), self.current[d])

    def free(self, nbytes: int, device: int | None = None) -> None:
        d = self.device if device is None else device
        self.current[d] -= nbytes

    def stats(self, device: int) -> dict[str, Any]:
        cur, peak = self.current.get(device, 0), self.peak.get(device, 0)
        out: dict[str, Any] = {"num_alloc_retries": 0, "num_ooms": 0,
                               "oversize_allocations": {"current": 0, "peak": 0,
                                                        "allocated": 0, "freed": 0}}
        for name in BYTE_STATS:
            out[name] = {pool: {"current": cur, "peak": peak, "allocated": peak, "freed": 0}
                         for pool in POOLS}
        return out

    def reset_peak(self, device: int) -> None:
        self.peak[device] = self.current.get(device, 0)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """CUDA initialised, device :attr:`device` current, torch._C's counters are these."""
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda.memory, "is_initialized", lambda: True)  # its own name
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.device)
        for name, call in (("_cuda_memoryStats", self.stats),
                           ("_cuda_resetPeakMemoryStats", self.reset_peak),
                           ("_accelerator_getDeviceStats", self.stats),
                           ("_accelerator_resetPeakStats", self.reset_peak)):
            monkeypatch.setattr(torch._C, name, call, raising=False)
