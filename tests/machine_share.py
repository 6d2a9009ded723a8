"""Who may use the machine beside whom, when pytest-xdist runs the suite in several workers.

Most tests judge what a run did (its exit status, its steps, its files, its output) and run
beside each other. Some judge a measured time: a finding that must clear the run's own noise, a
verify verdict, a step marked slow. A busy neighbour is exactly the noise those verdicts are
built to reject, so what is measured runs while no other test does. Two marks say what that is:

* ``timing`` on a test or a module: the whole test, or the whole module with its fixtures,
  runs alone (a test that times something in process; the corpus, whose runs go on in a
  background thread while its tests check the last one).
* ``timed_runs`` on a module or a test: only its recordings run alone, the ``dsprof run`` and ``dsprof
  verify`` processes whose times it judges (``recording()``, which the helpers that start them
  enter). Loading the run, analysing it and checking the findings read tables, not clocks, so
  they run beside other tests: the recording is the part that must be quiet.

An ordinary test lets a waiting recording in between its parts (``let_a_recording_in()``, which
the helpers that start a process call), so a recording waits for the part in progress beside
it, not for the whole of a long test.

A readers-writer lock over ``flock`` on two files that all workers share: each worker holds the
lock shared for an ordinary test and exclusive for a ``timing`` one, and converts to exclusive
for a recording. An ordinary test holds it for the test only (its setup, call and teardown), so
a recording waits for the test in progress on the other worker, not for the rest of its module.
A turnstile gives a waiting writer the next turn: readers pass through it, a writer holds it
while it waits, so a stream of ordinary tests on the other worker cannot keep a timing test
waiting for ever. ``flock`` locks die with their process, so a crashed worker never leaves the
others waiting. The lock is taken in the main thread only: a thread that asked for it while the
main thread held it shared would wait on its own process.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class MachineShare:
    """One worker's hold on the machine (a lock file and a turnstile in ``folder``)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_path = folder / "machine.lock"
        self._turnstile_path = folder / "machine.turnstile"
        self._held: IO[str] | None = None
        self.exclusive = False
        _shares.append(self)

    def shared(self) -> None:
        """Hold the machine beside other ordinary tests, after any timing test waiting."""
        self.release()
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._turnstile_path, "a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)  # released on close: a writer waiting goes first
        self._held = open(self._lock_path, "a")  # noqa: SIM115 (held across calls)
        fcntl.flock(self._held, fcntl.LOCK_SH)
        self.exclusive = False

    def alone(self) -> None:
        """Hold the machine with no other test running (what was held is given up first, so
        two workers that both want it alone cannot wait on each other)."""
        self.release()
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._turnstile_path, "a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            self._held = open(self._lock_path, "a")  # noqa: SIM115 (held across calls)
            fcntl.flock(self._held, fcntl.LOCK_EX)
        self.exclusive = True

    def release(self) -> None:
        if self._held is not None:
            self._held.close()  # closing the file drops its flock
            self._held = None
        self.exclusive = False

    def forget_in_forked_child(self) -> None:
        """A forked child shares the worker's open lock file, and a flock lasts while any
        descriptor of it is open: a DataLoader's persistent fork workers that outlive their
        test held the machine shared, and the suite hung (the other worker waiting alone, this
        one behind it at the turnstile). The child closes its copy: the worker's lock stays."""
        if self._held is not None:
            self._held.close()
            self._held = None
        self.exclusive = False


_shares: list[MachineShare] = []


def _forget_shares_in_forked_child() -> None:
    for share in _shares:
        share.forget_in_forked_child()


os.register_at_fork(after_in_child=_forget_shares_in_forked_child)


# The folder the xdist controller makes for its workers (they inherit its environment), and,
# in that controller only, its path: a pytest that a test starts inherits the variable too, and
# must not remove the folder when it ends.
SHARE_ENV = "TESTS_MACHINE_SHARE"
_made: str | None = None


def open_share_folder(config) -> None:
    """On the xdist controller, before its workers start: the folder they will share."""
    global _made
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        _made = os.environ[SHARE_ENV] = tempfile.mkdtemp(prefix="dsprof-tests-")


def close_share_folder() -> None:
    """On the controller that made the folder, once its workers are gone."""
    global _made
    if _made is not None:
        shutil.rmtree(_made, ignore_errors=True)
        if os.environ.get(SHARE_ENV) == _made:
            del os.environ[SHARE_ENV]
        _made = None


def share_folder(config) -> Path | None:
    """The folder every xdist worker of this run sees, or None when this pytest is no xdist
    worker: the suite runs in one process, or a test started this pytest (it inherits the
    worker's environment, and must not wait on the lock its parent holds)."""
    folder = os.environ.get(SHARE_ENV)
    return Path(folder) if folder and hasattr(config, "workerinput") else None


# This worker's share while a test runs (set by tests/conftest.py), and whether the test is
# marked ``timed_runs`` (itself or its module): then ``recording()`` takes the machine alone.
worker_share: MachineShare | None = None
records_alone = False


def let_a_recording_in() -> None:
    """Between two parts of an ordinary test (before it starts a process): a recording or a
    timing test waiting on the other worker goes first, and this test goes on once it is done.
    Without it a recording waited for the whole of the test in progress beside it (a measured
    suite: 349 s over 113 recordings, the machine half used meanwhile). An ordinary test
    judges no time, so a pause between its parts changes nothing it checks. Nothing happens
    where nothing waits (two flock calls), in a test that holds the machine alone, off the
    main thread (the lock is the main thread's), or while a process the test started still
    runs: a test that reads a run while its script trains would pause while the script went on
    (and ended before the test looked), and the recording would share the machine with it."""
    share = worker_share
    if share is None or share.exclusive or share._held is None \
            or threading.current_thread() is not threading.main_thread() or _has_children():
        return
    share.shared()  # gives the hold up, passes the turnstile after a waiting writer, holds again


def _has_children() -> bool:
    """Whether this process has a child a test started, running or not yet reaped (Linux
    /proc; where it cannot be read, as if it had one: the test goes on without pausing).
    multiprocessing's resource tracker and fork server, started by the first test that spawns
    and alive as long as the worker, are no test's."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    helpers = {multiprocessing.resource_tracker._resource_tracker._pid,
               multiprocessing.forkserver._forkserver._forkserver_pid}
    try:
        children = [int(pid) for task in os.listdir("/proc/self/task")
                    for pid in Path(f"/proc/self/task/{task}/children").read_text().split()]
    except (OSError, ValueError):
        return True
    return any(pid not in helpers for pid in children)


@contextmanager
def recording() -> Iterator[None]:
    """Around a process whose times a ``timed_runs`` test judges: no other test runs meanwhile.
    Elsewhere (an ordinary test, a test already alone, one process) it changes nothing."""
    share = worker_share
    if share is None or not records_alone or share.exclusive:
        yield
        return
    share.alone()
    try:
        yield
    finally:
        share.shared()
