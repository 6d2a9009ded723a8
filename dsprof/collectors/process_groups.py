"""Keep the script's process groups alive until the process exits, then let them go only once
their gloo worker threads are idle: the DDP/gloo exit hang under torch 2.13.

The hang: when the last reference to a gloo process group goes (typically the DDP Reducer,
freed as the script's ``main()`` returns), ``~ProcessGroupGloo`` joins the group's worker
threads with the GIL held. A worker that is still freeing its last work item needs the GIL
(the item's captured thread-local state holds the ``contextvars.Context`` that autograd stashed
for the backward that issued the all-reduce), so neither moves again. Plain python loses the
race rarely, a process that ran torch.profiler often (``benchmarks/gloo_teardown_race.py``).

What dsprof does, without touching the script's objects: at every step boundary and every
``backward()`` end it takes a reference to each gloo process group torch.distributed knows
(``_world.pg_map``), so no group is destroyed while the script runs, wherever its last
reference goes (a C++ one, like the Reducer's, included). At interpreter exit, after
the script's own exit handlers and globals (:mod:`dsprof.launch`), and after the session has
saved everything, it waits with the GIL released until every gloo worker thread is parked on
its empty queue (read from ``/proc``: an untimed futex wait; a thread waiting for the GIL
waits with a timeout), then drops its references: the destructors join idle threads.

What it changes: a group the script destroyed (``destroy_process_group``) keeps its threads
and sockets until the process exits instead of until its last user reference goes.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from dsprof.frames import raised_in_signal_handler
from dsprof.log import logger

GLOO_WORKER = "pt_gloo_runloop"  # torch names its gloo worker threads so (torch >= 2.x)
_FUTEX_SYSCALL = {"x86_64": "202", "aarch64": "98"}  # the futex syscall's number
_IDLE_WAIT_S = 10.0  # the longest dsprof waits at exit for the workers to park

_kept: dict[int, Any] = {}
_owner = os.getpid()  # the process whose threads the held groups' destructors would join
# (world size, rank) of the default group when a boundary first saw one (default_group_seen)
_default_seen: tuple[int, int] | None = None


def keep_alive() -> int:
    """Hold every process group torch.distributed knows now; returns how many are held."""
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return len(_kept)
    try:
        if not (dist.is_available() and dist.is_initialized()):
            return len(_kept)
        groups = list(dist.distributed_c10d._world.pg_map)
    except Exception as caught:  # a torch without these internals: nothing to hold
        if raised_in_signal_handler(caught):
            raise  # the script's own signal handler's: it is the script's
        return len(_kept)
    global _owner, _default_seen
    if not _kept:
        _owner = os.getpid()
    if _default_seen is None:
        _default_seen = _default_group_place(dist)
    for pg in groups:
        if id(pg) not in _kept and _uses_gloo(dist, pg):
            _kept[id(pg)] = pg
    return len(_kept)


def default_group_seen() -> tuple[int, int] | None:
    """(world size, rank) of the script's default process group, as first seen at a step
    boundary (a script may destroy its group before it exits); None if it had none."""
    return _default_seen


def _default_group_place(dist: Any) -> tuple[int, int] | None:
    try:
        return int(dist.get_world_size()), int(dist.get_rank())
    except Exception as caught:  # no default group (only subgroups), or one being torn down
        if raised_in_signal_handler(caught):
            raise  # the script's own signal handler's: it is the script's
        return None


def _uses_gloo(dist: Any, pg: Any) -> bool:
    """A group with a gloo backend ("gloo", "cpu:gloo,cuda:nccl"); NCCL's own teardown in
    ``destroy_process_group`` is left as it is."""
    try:
        return "gloo" in str(dist.get_backend(pg)).lower()
    except Exception as caught:  # a group torch cannot name: hold it, holding is harmless
        if raised_in_signal_handler(caught):
            raise  # the script's own signal handler's: it is the script's
        return True


def kept() -> int:
    return len(_kept)


def _gloo_workers() -> list[str]:
    """The /proc task folders of this process's gloo worker threads."""
    base = f"/proc/{os.getpid()}/task"
    out = []
    try:
        tids = os.listdir(base)
    except OSError:
        return []
    for tid in tids:
        try:
            with open(f"{base}/{tid}/comm") as f:
                if f.read().strip() == GLOO_WORKER:
                    out.append(f"{base}/{tid}")
        except OSError:  # the thread ended meanwhile
            continue
    return out


def _parked(task: str, futex: str) -> bool:
    """Blocked in a futex wait without a timeout: a gloo worker waiting for work on its empty
    queue. A thread waiting for the GIL waits with a timeout (CPython re-checks every 5 ms);
    a running thread shows ``running``."""
    try:
        with open(f"{task}/syscall") as f:
            fields = f.read().split()
    except FileNotFoundError:  # gone: as idle as it gets
        return True
    except OSError:
        return False
    # "202 uaddr op val timeout uaddr2 val3 sp pc": the fourth argument is the timeout pointer
    return len(fields) >= 5 and fields[0] == futex and int(fields[4], 16) == 0


def workers_idle() -> bool:
    """Every gloo worker thread of this process is parked (True without any). Linux only."""
    futex = _FUTEX_SYSCALL[os.uname().machine]
    return all(_parked(t, futex) for t in _gloo_workers())


def wait_idle(timeout_s: float = _IDLE_WAIT_S) -> bool:
    """Sleep (the GIL free) until every gloo worker thread is parked twice in a row, 5 ms apart
    (so one seen between two waits is not taken for idle); False after ``timeout_s``."""
    if os.uname().machine not in _FUTEX_SYSCALL or not os.path.isdir("/proc/self/task"):
        time.sleep(0.2)  # cannot look: give the workers the GIL for a while instead
        return True
    if not _gloo_workers():  # none, or a torch that names them otherwise
        time.sleep(0.1)
        return True
    deadline = time.monotonic() + timeout_s
    streak = 0
    while time.monotonic() < deadline:
        streak = streak + 1 if workers_idle() else 0
        if streak >= 2:
            return True
        time.sleep(0.005)
    return False


def release() -> None:
    """At exit: let the held process groups go once their workers are idle. Not in a process
    the script forked (a DataLoader worker running its exit handlers): its copies of the groups
    have no threads to join, so they are left to the process's end, unreleased."""
    if not _kept or os.getpid() != _owner:
        return
    if not wait_idle():
        logger.debug("gloo worker threads still busy after %.0f s at exit; releasing the "
                     "process groups anyway", _IDLE_WAIT_S)
    _kept.clear()
