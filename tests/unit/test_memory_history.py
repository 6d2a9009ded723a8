"""A script's own allocator history survives dsprof's windows (collectors/memory_history.py).
No GPU here: torch._C's history setter is a recorder of the allocator's recording state; the
calls above it are torch's own ``torch.cuda.memory._record_memory_history``."""

from __future__ import annotations

import pytest
import torch

from dsprof.collectors import memory_history
from dsprof.collectors.device import Device
from dsprof.collectors.memory import MemoryCollector


class Recording:
    """The allocator's history setting, as the last call to torch._C left it."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, int]] = []

    def set(self, enabled, context, stacks, max_entries, *rest) -> None:
        self.calls.append((enabled, max_entries))

    @property
    def now(self) -> tuple[object, int] | None:
        return self.calls[-1] if self.calls else None


@pytest.fixture
def history(monkeypatch):
    recording = Recording()
    monkeypatch.setattr(torch._C, "_cuda_record_memory_history", recording.set, raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch._C, "_cuda_memorySnapshot", lambda *a: {"segments": []},
                        raising=False)
    memory_history.install()
    yield recording
    memory_history.uninstall()


GPU = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 1)


def test_without_a_recording_of_the_scripts_dsprof_records_its_windows(history):
    assert GPU.start_memory_history(1000) is True
    assert history.now == ("all", 1000)
    GPU.stop_memory_history()
    assert history.now is not None and history.now[0] is None


def test_the_scripts_own_recording_is_left_as_it_set_it(history):
    # GIVEN a script that records its allocator history to dump its own snapshot
    torch.cuda.memory._record_memory_history(max_entries=100_000)
    assert history.now == ("all", 100_000)
    # WHEN a dsprof window opens and closes
    assert GPU.start_memory_history(1000) is False
    GPU.stop_memory_history()
    # THEN the script's recording is the one in force, untouched
    assert history.calls == [("all", 100_000)]
    # and once the script stops its own, dsprof's next window records again
    torch.cuda.memory._record_memory_history(None)
    assert GPU.start_memory_history(1000) is True


def test_a_recording_the_script_starts_inside_a_window_is_not_stopped_by_its_end(history):
    assert GPU.start_memory_history(1000) is True
    torch.cuda.memory._record_memory_history(max_entries=50_000)  # the script's, mid-window
    GPU.stop_memory_history()
    assert history.now == ("all", 50_000)


def test_a_window_without_dsprofs_recording_saves_no_snapshot(history, tmp_path):
    # the script's recording spans far more than the window: the window's memory comes from
    # the profiler's events instead of a snapshot
    torch.cuda.memory._record_memory_history(max_entries=100_000)
    memory = MemoryCollector(GPU, tmp_path, lambda: 0)
    memory.window_started(1, 3)
    memory.window_stopped(None)
    assert not list(tmp_path.glob("*.snapshot.pickle"))
    assert history.calls == [("all", 100_000)]


def test_uninstall_gives_torch_its_setter_back(history):
    memory_history.uninstall()
    assert torch._C._cuda_record_memory_history == history.set
    memory_history.install()
