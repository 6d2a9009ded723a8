"""dsprof leaves CUDA's start to the script (collectors/device.py, collectors/cuda_start.py).

Initialised CUDA reads ``CUDA_VISIBLE_DEVICES`` once and does not survive a fork, so a session
that initialised it as the script imports torch ran another program. There is no GPU here:
torch.cuda's calls that initialise CUDA are replaced by recorders that fail the test when
called before the script's own CUDA start, and torch's queue of calls for that start
(``torch.cuda._lazy_call``) is kept as torch keeps it. Everything else is the real collector
code on the real torch.
"""

from __future__ import annotations

import ctypes
import logging
import os
from types import SimpleNamespace

import pytest
import torch

from dsprof.collectors import cuda_start, session_end
from dsprof.collectors.device import Device, detect, nvml_bus_id
from dsprof.collectors.memory import MemoryCollector

# what torch.cuda does that initialises CUDA (torch's own docs and source: _lazy_init, or the
# C++ lazyInitDevice of the allocator's history and out-of-memory observer)
INITIALISING = ("is_available", "current_device", "get_device_properties", "init",
                "_lazy_init", "reset_peak_memory_stats", "max_memory_allocated",
                "memory_stats", "memory_allocated")


class FakeGpu:
    """Two H100s behind a CPU build of torch: NVML counts them, nothing is initialised until
    :meth:`script_starts_cuda` runs torch's queued calls as ``torch.cuda._lazy_init`` does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.initialised = False
        self.starting = False
        self.early: list[str] = []  # CUDA calls made before the script started CUDA
        self.calls: list[tuple[str, object]] = []
        self.queue: list = []
        self.device = 0
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "device_count", lambda: 2)
        monkeypatch.setattr(cuda, "is_initialized", lambda: self.initialised)
        monkeypatch.setattr(cuda, "_lazy_call", lambda call, **_kw: self.queue.append(call))
        for name in INITIALISING:
            monkeypatch.setattr(cuda, name, self._recorder(name))
        monkeypatch.setattr(cuda.memory, "_record_memory_history",
                            self._recorder("_record_memory_history"))
        monkeypatch.setattr(cuda.memory, "_snapshot", self._recorder("_snapshot"))
        for name in ("_cuda_attach_out_of_memory_observer", "_cuda_memoryStats",
                     "_cuda_resetPeakMemoryStats"):
            monkeypatch.setattr(torch._C, name, self._recorder(name), raising=False)

    def _recorder(self, name: str):
        def call(*args, **kwargs):
            if not (self.initialised or self.starting):
                self.early.append(name)
            self.calls.append((name, args[0] if args else None))
            if name == "current_device":
                return self.device
            if name == "get_device_properties":
                return SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 << 30,
                                       major=9, minor=0)
            if name in ("memory_stats", "_snapshot", "_cuda_memoryStats"):
                return {}
            return 0
        return call

    def script_starts_cuda(self) -> None:
        """torch.cuda._lazy_init: the queued calls run while is_initialized() is still False."""
        self.starting = True
        for call in self.queue:
            call()
        self.starting, self.initialised = False, True


@pytest.fixture
def gpu(monkeypatch):
    return FakeGpu(monkeypatch)


def test_detect_counts_the_gpus_and_initialises_nothing(gpu):
    device = detect()
    assert (device.kind, device.count, device.settled) == ("cuda", 2, False)
    assert device.index is None and device.name == "" and device.total_memory == 0
    assert gpu.early == []


def test_before_the_script_starts_cuda_no_counter_or_history_initialises_it(gpu, tmp_path):
    # GIVEN the session's device and memory collector, as at the script's import torch
    device = detect()
    memory = MemoryCollector(device, tmp_path, lambda: 0)
    memory.install()
    # WHEN every boundary read runs before the script's first CUDA call
    device.reset_peak()
    assert device.peak_allocated() is None
    assert device.memory_stats() is None and device.memory_snapshot() is None
    assert device.start_memory_history(1000) is False
    device.stop_memory_history()
    assert nvml_bus_id(device) is None and device.settle() is False
    memory.on_step(1, 5)
    # THEN nothing initialised CUDA; the observer and the history wait in torch's queue
    assert gpu.early == [] and len(gpu.queue) == 2
    assert not memory.off


def test_the_script_starting_cuda_attaches_the_observer_and_starts_an_open_windows_history(
        gpu, tmp_path):
    device = detect()
    memory = MemoryCollector(device, tmp_path, lambda: 0)
    memory.install()
    memory._window = 1  # a profiled window is open as the script starts CUDA
    gpu.script_starts_cuda()
    names = [name for name, _ in gpu.calls]
    assert names == ["_cuda_attach_out_of_memory_observer", "_record_memory_history"]
    assert gpu.early == []


def test_the_first_boundary_after_cuda_started_reads_the_device_the_script_set(gpu):
    # GIVEN a rank that started CUDA, then called torch.cuda.set_device(1)
    device = detect()
    gpu.script_starts_cuda()
    gpu.device = 1
    # WHEN a boundary settles the facts
    assert device.settle() is True
    # THEN they are cuda:1's, read once
    assert (device.index, device.name, device.total_memory, device.capability, device.count) \
        == (1, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 2)
    assert device.settle() is False
    assert device.to_json() == {"kind": "cuda", "index": 1, "name": "NVIDIA H100 80GB HBM3",
                                "total_memory": 80 << 30, "capability": "9.0", "count": 2}
    # and the counters are read on it
    device.reset_peak()
    assert ("_cuda_resetPeakMemoryStats", 1) in gpu.calls


def test_a_script_that_never_started_cuda_is_recorded_as_a_cpu_run(gpu):
    session = SimpleNamespace(device=detect())
    session_end._settle_device(session)
    assert session.device.kind == "cpu" and session.device.settled
    assert session.device.index is None and session.device.total_memory > 0
    assert gpu.early == []


def test_a_forked_child_does_not_run_the_parents_queued_calls(gpu, monkeypatch):
    ran: list[int] = []
    cuda_start.when_cuda_starts(lambda: ran.append(1))
    monkeypatch.setattr(cuda_start.os, "getpid", lambda: -1)  # the queue, in a forked child
    gpu.script_starts_cuda()
    assert ran == []


def test_a_failing_queued_call_never_fails_the_scripts_cuda_start(gpu, caplog):
    def broken() -> None:
        raise RuntimeError("allocator says no")

    cuda_start.when_cuda_starts(broken)
    with caplog.at_level(logging.WARNING, logger="dsprof"):
        gpu.script_starts_cuda()
    assert gpu.initialised
    assert "as CUDA started: test_a_failing_queued_call_never_fails_the_scripts_cuda_start" \
           ".<locals>.broken failed: RuntimeError: allocator says no" in caplog.text


def test_once_cuda_is_started_a_call_runs_at_once(gpu):
    gpu.initialised = True
    ran: list[int] = []
    cuda_start.when_cuda_starts(lambda: ran.append(1))
    assert ran == [1] and gpu.queue == []


class FakeDriver:
    """libcuda's cuDeviceGetCount: CUDA_ERROR_NOT_INITIALIZED (3) before cuInit, else 0."""

    def __init__(self, initialised: bool):
        self.initialised = initialised

    def cuDeviceGetCount(self, count) -> int:
        return 0 if self.initialised else 3


@pytest.mark.parametrize("initialised", [True, False])
def test_the_driver_is_asked_whether_it_was_initialised_without_initialising_it(
        monkeypatch, initialised):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver(initialised))
    assert cuda_start.cuda_driver_initialised() is initialised


def test_without_a_driver_library_there_is_no_answer(monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert cuda_start.cuda_driver_initialised() is None


@pytest.mark.parametrize(("driver_at_start", "named"), [(False, False), (True, True),
                                                         (None, True)])
def test_a_device_variable_set_after_import_torch_is_named_only_where_cuda_had_read_it(
        monkeypatch, driver_at_start, named):
    # GIVEN a GPU run whose script set CUDA_VISIBLE_DEVICES after its import torch
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    device = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 2)
    session = SimpleNamespace(device=device, driver_at_start=driver_at_start,
                              environment_at_load={"CUDA_VISIBLE_DEVICES": None})
    # THEN it is named only where dsprof's start had initialised the driver (or no driver
    # library could say): elsewhere the script's CUDA read it, as without dsprof
    late = session_end._set_too_late(session)
    assert bool(late) is named
    if named:
        assert late[0]["variable"] == "CUDA_VISIBLE_DEVICES" and late[0]["set_to"] == "1"


def test_dsprofs_profiler_asks_nvml_not_cuda_whether_cuda_is_there(monkeypatch):
    # GIVEN a CUDA build's availability check on a machine with two GPUs: CUDA's own count
    # (cudaGetDeviceCount, which runs cuInit) is a recorder; NVML counts without it
    asked: list[str] = []
    monkeypatch.setattr(torch.cuda, "_is_compiled", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch._C, "_cuda_getDeviceCount",
                        lambda: asked.append("cuInit") or 2, raising=False)
    monkeypatch.delenv(cuda_start.NVML_AVAILABILITY, raising=False)
    # WHEN torch's profiler is built for CUDA tracing, as dsprof's window prepares it
    with cuda_start.availability_by_nvml():
        prof = torch.autograd.profiler.profile(use_device="cuda", use_kineto=True)
    # THEN it kept CUDA tracing, asked NVML, and the variable is gone again
    assert prof.use_device == "cuda" and asked == []
    assert cuda_start.NVML_AVAILABILITY not in os.environ
    # while without the guard torch's check runs cuInit (what dsprof did at import torch)
    torch.autograd.profiler.profile(use_device="cuda", use_kineto=True)
    assert asked == ["cuInit"]


@pytest.mark.parametrize("set_by_script", [None, "0", "1"])
def test_the_scripts_own_availability_setting_is_put_back(monkeypatch, set_by_script):
    if set_by_script is None:
        monkeypatch.delenv(cuda_start.NVML_AVAILABILITY, raising=False)
    else:
        monkeypatch.setenv(cuda_start.NVML_AVAILABILITY, set_by_script)
    with cuda_start.availability_by_nvml():
        assert os.environ[cuda_start.NVML_AVAILABILITY] == "1"
    assert os.environ.get(cuda_start.NVML_AVAILABILITY) == set_by_script


def test_once_the_script_started_cuda_the_environment_is_left_alone(gpu, monkeypatch):
    gpu.initialised = True
    monkeypatch.delenv(cuda_start.NVML_AVAILABILITY, raising=False)
    with cuda_start.availability_by_nvml():
        assert cuda_start.NVML_AVAILABILITY not in os.environ
