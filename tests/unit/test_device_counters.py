"""The allocator's counters are read on the device the script trains on (collectors/device.py):
a rank that calls ``torch.cuda.set_device(local_rank)`` after dsprof's session started (with
device 0 current) has its own device's peak and counters read, not device 0's. There is no GPU
here: torch._C's allocator counters are a fake allocator (tests/fake_allocator.py), the one
thing this test cannot have."""

from __future__ import annotations

import torch

from dsprof.collectors.device import Device
from tests.fake_allocator import FakeAllocator


def test_the_counters_follow_the_device_the_script_set(monkeypatch):
    # GIVEN a session that started on cuda:0, in a rank that has since set cuda:3
    device = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 8)
    allocator = FakeAllocator()
    allocator.device = 3
    allocator.install(monkeypatch)
    allocator.alloc(1 << 20)
    allocator.alloc(64 << 20, device=0)  # another device's use: none of this rank's counters
    # WHEN dsprof reads its counters around a step
    device.reset_peak()
    allocator.alloc(2 << 20)
    # THEN each is read on cuda:3
    assert device.peak_allocated() == 3 << 20
    assert device.memory_stats()["allocated"] == 3 << 20
    assert allocator.peak[0] == 64 << 20  # cuda:0's peak was not reset


def test_before_cuda_is_initialised_the_device_seen_at_start_is_read(monkeypatch):
    device = Device("cuda", 1, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 8)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert device.current_index() == 1
