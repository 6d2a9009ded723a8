"""What DataLoader workers did while the training thread waited, read from
/proc/<pid>/schedstat around real waits on real worker processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dsprof.collectors import worker_clock
from dsprof.collectors.worker_clock import WorkerSampler, WorkerTimes, schedstat, worker_pids

pytestmark = pytest.mark.skipif(not Path("/proc/self/schedstat").exists(),
                                reason="no /proc/<pid>/schedstat on this kernel")


class Sleepy(Dataset):
    """Each sample waits 10 ms, as a read from disk or network would."""

    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(0.01)
        return torch.zeros(4)


class Busy(Sleepy):
    """Each sample computes for 10 ms."""

    def __getitem__(self, i: int) -> torch.Tensor:
        end = time.thread_time() + 0.01
        while time.thread_time() < end:
            pass
        return torch.zeros(4)


def _sample(dataset: Dataset, monkeypatch) -> WorkerTimes:
    monkeypatch.setattr(worker_clock, "SAMPLE_EVERY_NS", 0)  # every wait, for the test
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    it = iter(loader)
    next(it)  # the workers' start-up is not what is sampled
    sampler, times = WorkerSampler(), WorkerTimes()
    for _ in range(8):
        before = sampler.before(it)
        assert before is not None and set(before) == set(worker_pids(it))
        next(it)
        WorkerSampler.after(before, times)
    del it
    return times


def test_workers_that_sleep_are_seen_asleep_through_the_wait(monkeypatch):
    times = _sample(Sleepy(), monkeypatch)
    assert times.waits == 8 and times.wall_ns > 8 * 10_000_000
    assert (times.cpu_ns + times.runq_ns) / times.wall_ns < 0.3


def test_workers_that_compute_are_seen_on_a_cpu_or_waiting_for_one(monkeypatch):
    times = _sample(Busy(), monkeypatch)
    assert times.waits == 8
    assert (times.cpu_ns + times.runq_ns) / times.wall_ns > 0.6


def test_a_process_that_is_gone_reads_as_nothing():
    assert schedstat(2**22 + 12345) is None
    assert worker_pids(object()) == []
