"""The suite's lock on the machine (tests/machine_share.py): a recording of a ``timed_runs``
module waits for the test in progress on the other worker, runs alone, and gives the machine
back shared. Each share opens its own lock files, so two shares in one process contend as two
workers do (``flock`` locks belong to the open file)."""

from __future__ import annotations

import threading
import time

import pytest

from tests import machine_share
from tests.machine_share import MachineShare, recording


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """This process as a worker of a ``timed_runs`` module, and its neighbour's share."""
    share = MachineShare(tmp_path)
    monkeypatch.setattr(machine_share, "worker_share", share)
    monkeypatch.setattr(machine_share, "records_alone", True)
    share.shared()
    yield share, MachineShare(tmp_path)
    share.release()


def _hold_shared_for(neighbour: MachineShare, seconds: float, released: list[float]):
    neighbour.shared()
    time.sleep(seconds)
    released.append(time.monotonic())
    neighbour.release()


def test_a_recording_waits_for_the_neighbours_test_and_then_runs_alone(worker):
    share, neighbour = worker
    # GIVEN the other worker in the middle of an ordinary test
    released: list[float] = []
    other = threading.Thread(target=_hold_shared_for, args=(neighbour, 0.4, released))
    other.start()
    time.sleep(0.1)
    # WHEN a recording starts THEN it waits until that test is done
    with recording():
        assert released and time.monotonic() >= released[0]
        assert share.exclusive
        # AND no other test starts while it records
        blocked = threading.Thread(target=neighbour.shared)
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive()
    # AND afterwards the test goes on holding the machine shared, beside the other worker
    assert not share.exclusive
    blocked.join(5)
    assert not blocked.is_alive()
    neighbour.release()
    other.join()


def test_outside_a_timed_runs_module_a_recording_does_not_wait(worker, monkeypatch):
    share, neighbour = worker
    monkeypatch.setattr(machine_share, "records_alone", False)
    neighbour.shared()
    t0 = time.monotonic()
    with recording():
        assert not share.exclusive
    assert time.monotonic() - t0 < 0.2
    neighbour.release()
