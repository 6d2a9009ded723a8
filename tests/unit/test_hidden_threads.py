"""dsprof's threads out of the script's sight (dsprof.hidden_threads): not listed or counted by
``threading``, not made known to it by a log line, joinable by dsprof, gone in a forked child;
and the collectors' threads (sampler, SIGTERM watcher, capture cap and memory watch) are such
threads."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import pytest

from dsprof.collectors.capture_cap import CapAlarm, MemoryWatch
from dsprof.collectors.samples import MetricSampler
from dsprof.hidden_threads import HiddenThread, HiddenTimer
from dsprof.log import logger
from dsprof.terminate import TermWatcher


def _seen() -> tuple[int, list[str]]:
    return threading.active_count(), sorted(t.name for t in threading.enumerate())


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_hidden_thread_is_not_listed_and_is_joined_when_its_work_is_done():
    # GIVEN what threading lists before
    before = _seen()
    release, entered = threading.Event(), threading.Event()
    thread = HiddenThread(lambda: (entered.set(), release.wait(10)), "dsprof-test")
    # WHEN the thread runs
    thread.start()
    assert entered.wait(10)
    # THEN threading lists and counts what it did before, and the thread is alive
    assert _seen() == before
    assert thread.is_alive()
    # AND a join with a timeout returns at the timeout while the work goes on
    t0 = time.perf_counter()
    thread.join(0.05)
    assert thread.is_alive() and time.perf_counter() - t0 < 5
    # AND once the work returns, join returns and the thread is no longer alive
    release.set()
    thread.join(10)
    assert not thread.is_alive()
    assert _seen() == before


def test_a_log_line_from_a_hidden_thread_names_it_without_making_it_known_to_threading(records):
    # GIVEN logging that records thread names (its default) and what threading lists now
    assert logging.logThreads
    before = _seen()
    listed: list[tuple[int, list[str]]] = []

    def work() -> None:
        logger.debug("from the %s thread", "hidden")
        listed.append(_seen())

    # WHEN a hidden thread logs through dsprof's logger
    thread = HiddenThread(work, "dsprof-test-logs")
    thread.start()
    thread.join(10)
    # THEN threading learned nothing of it while it ran (LogRecord's current_thread() made a
    # _DummyThread, listed, whose join() raises)
    assert listed == [before]
    # AND the record is logging's usual one, naming the thread
    (record,) = [r for r in records if r.getMessage() == "from the hidden thread"]
    assert record.threadName == "dsprof-test-logs"
    assert record.thread != threading.get_ident() and record.process == os.getpid()
    assert record.funcName == "work" and record.pathname == __file__


def test_a_dummy_thread_a_library_made_for_a_hidden_thread_goes_with_it(records):
    # GIVEN a hidden thread whose work calls threading.current_thread() (as a library may)
    before = _seen()
    made: list[str] = []
    thread = HiddenThread(lambda: made.append(threading.current_thread().name), "dsprof-test")
    # WHEN it ends
    thread.start()
    thread.join(10)
    # THEN the dummy thread it was given is no longer listed, and the log says who made it
    assert made and made[0].startswith("Dummy-")
    deadline = time.monotonic() + 10
    while _seen() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _seen() == before
    assert any("dsprof-test called threading.current_thread()" in r.getMessage()
               for r in records)


def test_a_hidden_timer_calls_once_its_delay_has_passed_unless_cancelled():
    # GIVEN two timers
    called = threading.Event()
    cancelled: list[int] = []
    timer = HiddenTimer(0.01, called.set, "dsprof-test-timer")
    kept_off = HiddenTimer(0.2, lambda: cancelled.append(1), "dsprof-test-timer")
    # WHEN one is left to run and the other is cancelled
    timer.start()
    kept_off.start()
    kept_off.cancel()
    # THEN the first calls, the second never does
    assert called.wait(10)
    time.sleep(0.4)
    assert cancelled == []


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_forked_child_has_none_of_its_parents_hidden_threads():
    # GIVEN a hidden thread at work
    release = threading.Event()
    thread = HiddenThread(lambda: release.wait(30), "dsprof-test")
    thread.start()
    try:
        # WHEN the process forks
        pid = os.fork()
        if pid == 0:  # the child: the thread is not alive there, and a join does not wait
            t0 = time.perf_counter()
            thread.join()
            os._exit(0 if not thread.is_alive() and time.perf_counter() - t0 < 1 else 1)
        # THEN the child found it gone; the parent's thread is still at work
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert thread.is_alive()
    finally:
        release.set()
        thread.join(10)


def test_the_collectors_threads_are_not_the_scripts(tmp_path):
    # GIVEN what threading lists before dsprof's collectors start
    before = _seen()
    sampler = MetricSampler(0.01, tmp_path, time.time_ns, None)
    watch = MemoryWatch(1 << 40, lambda grown: None)
    alarm = CapAlarm(lambda: time.perf_counter() + 60, lambda: None)
    term = TermWatcher(lambda: None)
    # WHEN the metric sampler, the capture's memory watch and its alarm (main thread only)
    # and the SIGTERM watcher run
    sampler.start()
    assert watch.start()
    armed = alarm.arm()
    installed = term.install()
    try:
        time.sleep(0.1)
        # THEN threading lists what it did before
        assert _seen() == before
    finally:
        term.uninstall()
        alarm.disarm()
        watch.stop()
        sampler.stop()
    # AND the sampler sampled on its thread, and stopped
    assert len(sampler.columns["ts_ns"]) >= 2
    assert not sampler._thread.is_alive()
    assert armed and installed  # (pytest runs tests on the main thread, SIGTERM at default)
