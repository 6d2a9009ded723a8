"""A process the profiled script forks (a helper, DataLoader workers) is not the session.

``os.register_at_fork(after_in_child=...)`` runs :func:`detach` in every forked child, inside
``os.fork()``: the child's copy of the session stops every collector's hooks at once, forgets
the run's lock and progress file (the parent's), and stops logging into the run. Nothing is
written and no profiler is stopped or exported there (Kineto's state, copied mid-use, crashes
when touched from the child). The CLI then ends such a child with its own exit status when it
comes back out of the script (:func:`dsprof.cli.run._exit_forked_child`).

But the child's thread is a copy of the forking thread, with the profiler's op callbacks on
it when the fork came inside a recording (the bootstrap capture of step 0, where a training
loop's DataLoader forks its workers; a window): every op a DataLoader worker ran was recorded
into a copy nobody reads. A worker's sample took 583 us under dsprof against 320 plain, and a
worker's memory grew without end (172 MB plain; 6.2 GB after 180,000 samples of 11 small tensor
ops). :func:`detach` turns RecordFunction off on the child's thread (a thread-local flag; no
Kineto call): 316 us a sample. What it leaves: the allocator still reports each allocation to
the copied profiler state (``profile_memory``), which only disabling the profiler would stop,
and that calls into Kineto: the same worker grew to 0.77 GB instead of 6.2.
"""

from __future__ import annotations

import os
from typing import Any

from dsprof import log

_owner: Any = None  # the session of this process, while it may fork
_registered = False


def register(session: Any) -> None:
    """``session`` is this process's session: forked children detach from it."""
    global _owner, _registered
    _owner = session
    if not _registered:
        os.register_at_fork(after_in_child=_after_fork)
        _registered = True


def _after_fork() -> None:
    global _owner
    session, _owner = _owner, None
    if session is not None:
        detach(session)


def detach(session: Any) -> None:
    """Turn the child's copy of ``session`` off. No locks, no I/O, nothing that can fail
    loudly: the child must go on as it would without dsprof."""
    session.forked_child = True
    _stop_recording_ops()
    session.forget()
    for handle in (session.lock, session.progress):
        if handle is not None:
            handle.detach()
    undo: list[Any] = [session.watcher and session.watcher.stop,
                       session.user_profiler and session.user_profiler.uninstall,
                       session.scaler and session.scaler.uninstall,
                       session.steps and session.steps.uninstall,
                       session.data and session.data.uninstall,
                       session.syncs and session.syncs.uninstall,
                       session.timeline and session.timeline.detach_in_child,
                       session.memory and session.memory.tracker.uninstall,
                       log.forget_file_in_child, *session.on_fork_child]
    for fn in undo:
        if fn:
            try:
                fn()
            except Exception:  # noqa: BLE001, S112 - the child must go on regardless
                continue


def _stop_recording_ops() -> None:
    """RecordFunction off on this thread when the fork came inside a recording: the copied
    profiler's op callbacks no longer run. Forked outside one, the child is left as it is (its
    own profiler, if it starts one, records as it would without dsprof)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:  # nothing of torch's was running
        return
    try:
        if torch._C._autograd._profiler_enabled():
            torch._C._autograd._enable_record_function(False)
    except (AttributeError, RuntimeError):  # a torch without it: ops stay recorded, as before
        pass
