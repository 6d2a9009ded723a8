"""The lock that lets timing tests run alone under pytest-xdist (tests/machine_share.py), with
real processes on real flock; and a recording of a ``timed_runs`` test, which waits for the
test in progress on the other worker, runs alone and gives the machine back shared. (Two
shares in one process contend as two workers do: ``flock`` locks belong to the open file.)"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import machine_share
from tests.machine_share import MachineShare, recording

CTX = mp.get_context("spawn")


def _hold(folder: str, mode: str, name: str, events, release) -> None:
    share = MachineShare(Path(folder))
    getattr(share, mode)()
    events.put(f"{name} in")
    release.wait(60)
    events.put(f"{name} out")
    # a Queue's put only hands the item to a feeder thread: flush it into the pipe before the
    # machine is given up, or the next holder's "in" can arrive first (CI rehearsal of
    # 15dbfc7 got "timing in" before "b out")
    events.close()
    events.join_thread()
    share.release()


def _start(folder: Path, mode: str, name: str, events):
    release = CTX.Event()
    proc = CTX.Process(target=_hold, args=(str(folder), mode, name, events, release))
    proc.start()
    return proc, release


def test_ordinary_tests_share_and_a_timing_test_waits_for_them_then_goes_first(tmp_path):
    events = CTX.Queue()
    # GIVEN two ordinary tests on the machine
    a, release_a = _start(tmp_path, "shared", "a", events)
    b, release_b = _start(tmp_path, "shared", "b", events)
    assert {events.get(timeout=60), events.get(timeout=60)} == {"a in", "b in"}
    # WHEN a timing test asks for the machine, and then another ordinary test
    writer, release_writer = _start(tmp_path, "alone", "timing", events)
    writer.join(1.0)
    late, release_late = _start(tmp_path, "shared", "late", events)
    late.join(1.0)
    # THEN neither got in while the first two held it
    assert events.empty()
    release_a.set()
    assert events.get(timeout=60) == "a out"
    assert events.empty()  # one reader is still in
    release_b.set()
    # AND the timing test goes in once they are out, alone: the late reader waits for it
    assert events.get(timeout=60) == "b out"
    assert events.get(timeout=60) == "timing in"
    late.join(0.5)
    assert events.empty()
    release_writer.set()
    assert [events.get(timeout=60) for _ in range(2)] == ["timing out", "late in"]
    release_late.set()
    assert events.get(timeout=60) == "late out"
    for proc in (a, b, writer, late):
        proc.join(60)
        assert proc.exitcode == 0


def test_a_worker_that_dies_holding_the_machine_lets_the_others_go_on(tmp_path):
    # (a queue of its own: a process killed mid-put can leave a shared queue's lock taken)
    dying = CTX.Queue()
    holder, _ = _start(tmp_path, "alone", "dead", dying)
    assert dying.get(timeout=60) == "dead in"
    holder.kill()
    holder.join(60)
    events = CTX.Queue()
    other, release = _start(tmp_path, "alone", "next", events)
    assert events.get(timeout=60) == "next in"
    release.set()
    other.join(60)
    assert other.exitcode == 0


def test_a_worker_turns_alone_and_back_without_waiting_on_itself(tmp_path):
    share = MachineShare(tmp_path)
    share.shared()
    share.alone()  # gives its shared hold up first: no wait on its own lock
    assert share.exclusive
    share.shared()
    assert not share.exclusive
    share.release()


def test_a_forked_child_that_outlives_its_test_does_not_hold_the_machine(tmp_path):
    # GIVEN a worker holding the machine shared forks a child that lives on (a DataLoader's
    # persistent fork workers did: the suite hung at 62%, the other worker waiting alone)
    share = MachineShare(tmp_path)
    share.shared()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.close(write_end)
        os.read(read_end, 1)  # lives until the parent says
        os._exit(0)
    os.close(read_end)
    try:
        # WHEN the worker gives the machine up
        share.release()
        # THEN a test that wants it alone gets it while the child still lives
        events = CTX.Queue()
        other, release = _start(tmp_path, "alone", "timing", events)
        assert events.get(timeout=30) == "timing in"
        release.set()
        other.join(60)
        assert other.exitcode == 0
    finally:
        os.close(write_end)
        os.waitpid(child, 0)


def test_only_xdist_workers_take_the_lock_and_only_its_maker_removes_the_folder(monkeypatch):
    # GIVEN the controller that made the folder for its workers
    controller = SimpleNamespace(getoption=lambda name, default=None: 2)
    monkeypatch.delenv(machine_share.SHARE_ENV, raising=False)
    machine_share.open_share_folder(controller)
    folder = Path(machine_share.os.environ[machine_share.SHARE_ENV])
    try:
        # THEN a worker shares it, a pytest that a test started (same environment) does not
        assert machine_share.share_folder(SimpleNamespace(workerinput={})) == folder
        assert machine_share.share_folder(SimpleNamespace()) is None
        assert folder.is_dir()
    finally:
        machine_share.close_share_folder()
    # AND the maker removes it once
    assert not folder.exists() and machine_share.SHARE_ENV not in machine_share.os.environ


# -- recordings of timed_runs tests ---------------------------------------------------------

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


def test_an_ordinary_test_lets_a_waiting_recording_in_between_its_parts(worker, monkeypatch):
    share, neighbour = worker
    monkeypatch.setattr(machine_share, "records_alone", False)  # this worker: an ordinary test
    # GIVEN the other worker asking to record alone while this test holds the machine
    order: list[str] = []

    def record():
        neighbour.alone()
        order.append("recorded")
        time.sleep(0.2)
        neighbour.release()

    other = threading.Thread(target=record)
    other.start()
    other.join(0.3)
    assert other.is_alive() and not order  # it waits for this test's part in progress
    # WHEN this test comes to its next part
    machine_share.let_a_recording_in()
    # THEN the recording went first, and this test holds the machine again
    order.append("next part")
    assert order == ["recorded", "next part"]
    assert share._held is not None and not share.exclusive
    other.join(5)


def test_with_no_recording_waiting_the_next_part_goes_on_at_once(worker, monkeypatch):
    share, _ = worker
    monkeypatch.setattr(machine_share, "records_alone", False)
    t0 = time.monotonic()
    machine_share.let_a_recording_in()
    assert time.monotonic() - t0 < 0.2 and share._held is not None
    # AND a test that holds the machine alone keeps it
    share.alone()
    machine_share.let_a_recording_in()
    assert share.exclusive


def test_a_test_whose_process_still_runs_does_not_pause_for_a_recording(worker, monkeypatch):
    share, neighbour = worker
    monkeypatch.setattr(machine_share, "records_alone", False)
    # GIVEN a test that started a process (a run it reads while the script trains), and the
    # other worker asking to record alone
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    recorded: list[str] = []

    def record():
        neighbour.alone()
        recorded.append("recorded")
        neighbour.release()

    waiting = threading.Thread(target=record)
    try:
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive()
        # WHEN the test comes to its next part THEN it goes on at once, still holding the
        # machine: the recording would share it with the process, which would go on meanwhile
        t0 = time.monotonic()
        machine_share.let_a_recording_in()
        assert time.monotonic() - t0 < 0.2 and share._held is not None and waiting.is_alive()
    finally:
        child.kill()
        child.wait()
    # AND once the process is gone, the next part lets the recording in
    machine_share.let_a_recording_in()
    assert recorded == ["recorded"]
    waiting.join(5)
