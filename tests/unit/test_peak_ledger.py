"""The script reads the allocator's peaks as without dsprof, while dsprof resets them at every
step boundary for its per-step peaks (collectors/peak_ledger.py). No GPU here: the four torch._C
functions under torch's counters are a fake allocator (tests/fake_allocator.py); the reads and
resets above them are torch's own Python."""

from __future__ import annotations

import os

import pytest
import torch

from dsprof.collectors import peak_ledger
from dsprof.collectors.device import Device
from tests.fake_allocator import FakeAllocator

MiB = 1 << 20


@pytest.fixture
def gpu(monkeypatch):
    allocator = FakeAllocator()
    allocator.install(monkeypatch)
    peak_ledger.install()
    yield allocator
    peak_ledger.uninstall()


def _steps(gpu: FakeAllocator, device: Device, sizes: list[int]) -> list[int | None]:
    """One step per size: activations of that size come and go; dsprof's boundary reads its
    peak and resets the counters, as collectors/step_samples.py does."""
    peaks = []
    for size in sizes:
        gpu.alloc(size * MiB)
        gpu.free(size * MiB)
        peaks.append(device.peak_allocated())
        device.reset_peak()
    return peaks


def test_the_script_reads_the_peak_since_the_start_while_dsprof_reads_each_steps(gpu):
    # GIVEN weights held for the run, then three steps whose activations differ
    device = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 1)
    gpu.alloc(100 * MiB)
    device.reset_peak()
    # WHEN dsprof reads and resets at each boundary
    peaks = _steps(gpu, device, [50, 300, 20])
    # THEN its per-step peaks are each step's
    assert peaks == [150 * MiB, 400 * MiB, 120 * MiB]
    # and the script's log line reads the run's peak, as without dsprof
    assert torch.cuda.max_memory_allocated() == 400 * MiB
    stats = torch.cuda.memory_stats()
    assert stats["allocated_bytes.all.peak"] == stats["reserved_bytes.large_pool.peak"] \
        == 400 * MiB
    assert stats["allocated_bytes.all.current"] == 100 * MiB  # the rest is torch's, unchanged


def test_the_scripts_own_reset_starts_its_peak_again(gpu):
    device = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 1)
    gpu.alloc(100 * MiB)
    _steps(gpu, device, [300, 20])
    torch.cuda.reset_peak_memory_stats()  # the script starts an epoch's measurement
    _steps(gpu, device, [50, 10])
    assert torch.cuda.max_memory_allocated() == 150 * MiB


def test_each_device_keeps_its_own_peak(gpu):
    device = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 2)
    gpu.device = 1  # a rank that set cuda:1
    _steps(gpu, device, [70, 10])
    assert torch.cuda.max_memory_allocated(1) == 70 * MiB
    assert torch.cuda.max_memory_allocated(0) == 0


def test_the_accelerator_apis_counters_read_the_same_peak(gpu):
    device = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 1)
    _steps(gpu, device, [300, 20])
    stats = torch._C._accelerator_getDeviceStats(0)
    assert stats["allocated_bytes"]["all"]["peak"] == 300 * MiB
    torch._C._accelerator_resetPeakStats(0)
    assert torch.cuda.max_memory_allocated() == 0


def test_a_forked_child_reads_its_own_counters(gpu, monkeypatch):
    device = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 1)
    _steps(gpu, device, [300, 20])
    child = os.getpid() + 1
    monkeypatch.setattr(os, "getpid", lambda: child)
    assert torch.cuda.max_memory_allocated() == 0


def test_uninstall_gives_torch_its_functions_back(gpu):
    readers = [getattr(torch._C, n) for n in ("_cuda_memoryStats", "_cuda_resetPeakMemoryStats")]
    assert all(hasattr(r, "__wrapped__") for r in readers)
    peak_ledger.uninstall()
    assert torch._C._cuda_memoryStats == gpu.stats
    assert torch._C._cuda_resetPeakMemoryStats == gpu.reset_peak
    peak_ledger.install()  # for the fixture's own uninstall


def test_without_a_cuda_build_nothing_is_replaced(monkeypatch):
    monkeypatch.delattr(torch._C, "_cuda_memoryStats", raising=False)
    peak_ledger.install()
    assert peak_ledger._originals == {}


def test_a_reset_by_the_script_mid_step_does_not_cut_dsprofs_step_peak(gpu):
    # GIVEN a step that peaks at 300 MiB, then the script resets the peak for its own log
    # (torchtitan's and HF's memory trackers do) before the step ends
    device = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 1)
    gpu.alloc(100 * MiB)
    device.reset_peak()
    gpu.alloc(200 * MiB)
    gpu.free(200 * MiB)
    torch.cuda.reset_peak_memory_stats()
    gpu.alloc(50 * MiB)
    gpu.free(50 * MiB)
    # THEN the script reads its own peak since its reset, and dsprof the step's whole one
    assert torch.cuda.max_memory_allocated() == 150 * MiB
    assert device.peak_allocated() == 300 * MiB
    # AND the next step starts afresh
    device.reset_peak()
    gpu.alloc(10 * MiB)
    assert device.peak_allocated() == 110 * MiB
