"""dsprof's threads in the profiled process, out of the script's sight.

A ``threading.Thread`` is listed by ``threading.enumerate()`` and counted by
``threading.active_count()``. Under ``dsprof run`` a script saw up to four more threads than
without dsprof (``dsprof-sigterm``, ``dsprof-sampler``, and while step 0 was captured
``dsprof-capture-cap`` and ``dsprof-capture-memory``), and one that joins every thread but its
own (``for t in threading.enumerate(): ... t.join()``, as test harnesses and some shutdown code
do) waited forever on the sampler and the SIGTERM watcher, which end only with the session or
the process.

dsprof's threads are started with ``_thread.start_new_thread``, which registers nothing in
``threading``: the script sees the threads it would see without dsprof. They are what a daemon
``threading.Thread`` is underneath (the interpreter's exit does not wait for them either;
``threading._shutdown`` joins only non-daemon threads), and :class:`HiddenThread` gives the
``start``/``join``/``is_alive`` the collectors used, with a lock in place of threading's
bookkeeping. What they must not do: call ``threading.current_thread()``, which registers a
thread it does not know as a ``_DummyThread`` in ``threading._active``, listed from then on
(and whose ``join()`` raises). logging's ``LogRecord`` calls it for every record
(``logging.logThreads``): dsprof's logger makes the records of these threads with
:func:`make_record`, which names the thread without it; :func:`on_main_thread` is the check
dsprof's code makes where it may run on one of them. A ``_DummyThread`` made anyway (by a
library the thread calls) is taken out of ``threading._active`` when the thread ends.

Fork: a child has the forking thread only; threading forgets its other threads there
(``threading._after_fork``), and so does this module: in a forked child every
:class:`HiddenThread` of the parent is no longer alive.
"""

from __future__ import annotations

import _thread
import logging
import os
import threading
import types
from collections.abc import Callable
from typing import Any

_names: dict[int, str] = {}
"""Thread id -> name of each of dsprof's threads running now (its log records carry it)."""
_forks = 0
"""Forks this process descends from: a thread started before the last fork is not in it."""


def _forked() -> None:
    global _forks
    _forks += 1
    _names.clear()


os.register_at_fork(after_in_child=_forked)


def on_main_thread() -> bool:
    """Whether this is the main thread, without ``threading.current_thread()`` (which makes
    one of dsprof's threads known to ``threading``)."""
    return threading.get_ident() == threading.main_thread().ident


def own_thread_name() -> str | None:
    """This thread's name when it is one of dsprof's hidden threads, else None."""
    return _names.get(threading.get_ident())


class HiddenThread:
    """A thread running ``target`` that ``threading.enumerate()`` does not list. ``join`` and
    ``is_alive`` say whether ``target`` has returned (from this process: in a forked child it
    is gone)."""

    def __init__(self, target: Callable[[], None], name: str):
        self.name = name
        self._target = target
        self._running = _thread.allocate_lock()  # held from start() until target returns
        self._started_in: int | None = None  # _forks when started

    def start(self) -> None:
        self._running.acquire()
        self._started_in = _forks
        try:
            _thread.start_new_thread(self._run, ())
        except BaseException:
            self._started_in = None
            self._running.release()
            raise

    def is_alive(self) -> bool:
        if self._started_in != _forks:
            return False
        if self._running.acquire(blocking=False):
            self._running.release()
            return False
        return True

    def join(self, timeout: float | None = None) -> None:
        if self._started_in != _forks:
            return
        if self._running.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._running.release()

    def _run(self) -> None:
        ident = threading.get_ident()
        _names[ident] = self.name
        try:
            self._target()
        except BaseException as exc:  # noqa: BLE001 - else printed as "Exception ignored in thread"
            from dsprof.log import logger

            logger.debug("%s: %s: %s", self.name, type(exc).__name__, exc)
        finally:
            _forget_dummy(ident, self.name)  # (its log line is still this thread's)
            _names.pop(ident, None)
            self._running.release()


class HiddenTimer:
    """``function`` called from a :class:`HiddenThread` once ``delay_s`` has passed, unless
    :meth:`cancel` came first (``threading.Timer``'s job)."""

    def __init__(self, delay_s: float, function: Callable[[], None], name: str):
        self._delay_s = delay_s
        self._function = function
        self._cancelled = threading.Event()
        self._thread = HiddenThread(self._wait, name)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._cancelled.set()

    def _wait(self) -> None:
        if not self._cancelled.wait(self._delay_s):
            self._function()


def _forget_dummy(ident: int, name: str) -> None:
    """Take out the ``_DummyThread`` a library's ``threading.current_thread()`` made for this
    thread, as threading would once the thread is gone (it never learns that it is)."""
    active: dict[int, Any] = getattr(threading, "_active", {})
    dummy_class = getattr(threading, "_DummyThread", None)
    if dummy_class is None or not isinstance(active.get(ident), dummy_class):
        return
    with threading._active_limbo_lock:  # type: ignore[attr-defined]
        if isinstance(active.get(ident), dummy_class):
            del active[ident]
    from dsprof.log import logger

    logger.debug("%s called threading.current_thread(): the script saw it as a dummy thread "
                 "until it ended", name)


class _ThreadingForRecords:
    """``threading`` as LogRecord's code sees it on one of dsprof's threads: the thread's name
    from :data:`_names`, never a ``_DummyThread``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)

    @staticmethod
    def current_thread() -> Any:
        return types.SimpleNamespace(name=own_thread_name() or "dsprof")


def make_record(name: str, level: int, fn: str, lno: int, msg: object, args: Any,
                exc_info: Any, func: str | None = None, extra: Any = None,
                sinfo: str | None = None) -> logging.LogRecord:
    """``Logger.makeRecord`` for one of dsprof's threads: logging's own ``LogRecord.__init__``
    run with ``threading`` standing for :class:`_ThreadingForRecords` (and logging's settings
    as they are now: ``logThreads``, ``logProcesses``), so the record names the thread
    (``dsprof-sampler``) and ``threading`` learns nothing of it."""
    init = logging.LogRecord.__init__
    seen = {**vars(logging), "threading": _ThreadingForRecords()}
    init_here = types.FunctionType(init.__code__, seen, init.__name__, init.__defaults__,
                                   init.__closure__)
    init_here.__kwdefaults__ = init.__kwdefaults__
    record = logging.LogRecord.__new__(logging.LogRecord)
    init_here(record, name, level, fn, lno, msg, args, exc_info, func, sinfo)
    if extra is not None:
        record.__dict__.update(extra)
    return record
