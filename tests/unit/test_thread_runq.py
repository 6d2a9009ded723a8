"""The stepping thread's run-queue wait (collectors/thread_runq.py, ``steps.runq_ns``)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from dsprof.collectors.thread_runq import ThreadRunq


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"),
                    reason="no /proc/thread-self/schedstat (not Linux)")
def test_each_thread_reads_its_own_run_queue_wait():
    runq = ThreadRunq()
    first = runq.read()
    assert isinstance(first, int) and first >= 0
    assert (runq.read() or 0) >= first  # it only grows
    # AND another thread reads its own file (a fresh thread has waited next to nothing)
    seen: list[int | None] = []
    worker = threading.Thread(target=lambda: seen.append(runq.read()))
    worker.start()
    worker.join()
    assert isinstance(seen[0], int) and len(runq._fds) == 2
    runq.close()
    assert runq._fds == {}


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_forked_child_does_not_read_its_parents_thread():
    runq = ThreadRunq()
    runq.read()
    pid = os.fork()
    if pid == 0:  # the child: the kept file is the parent's thread's; it opens its own
        runq.read()
        own = os.readlink(f"/proc/self/fd/{next(iter(runq._fds.values()))}")
        os._exit(0 if runq._pid == os.getpid() and f"/{os.getpid()}/" in own else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
