"""The allocator's counters are read on the device the script trains on (collectors/device.py):
a rank that calls ``torch.cuda.set_device(local_rank)`` after dsprof's session started (with
device 0 current) has its own device's peak and counters read, not device 0's. There is no GPU
here: torch.cuda's calls are replaced by recorders, the one thing this test cannot have."""

from __future__ import annotations

import torch

from dsprof.collectors.device import Device


def test_the_counters_follow_the_device_the_script_set(monkeypatch):
    # GIVEN a session that started on cuda:0, in a rank that has since set cuda:3
    device = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 8)
    asked: list[tuple[str, object]] = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda d=None: asked.append(("reset", d)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                        lambda d=None: asked.append(("peak", d)) or 1 << 20)
    monkeypatch.setattr(torch.cuda, "memory_stats",
                        lambda d=None: asked.append(("stats", d)) or {})
    # WHEN dsprof reads its counters
    device.reset_peak()
    assert device.peak_allocated() == 1 << 20
    assert device.memory_stats() is not None
    # THEN each is read on cuda:3
    assert asked == [("reset", 3), ("peak", 3), ("stats", 3)]


def test_before_cuda_is_initialised_the_device_seen_at_start_is_read(monkeypatch):
    device = Device("cuda", 1, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 8)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert device.current_index() == 1
