"""Tells when the profiled script runs torch.profiler itself.

Every torch.profiler session, whichever API starts it (``torch.profiler.profile`` with or
without a schedule, ``torch.autograd.profiler.profile``, ``tensorboard_trace_handler`` callers),
goes through ``torch.autograd.profiler.profile._prepare_trace`` to start and its ``__exit__`` to
stop. Kineto holds one session per process: a second one started on top of dsprof's crashes
torch (segfault, exit 139) and loses both traces. So this wraps those two methods: a session
that dsprof did not start (:func:`dsprof_profiler` marks dsprof's own) calls ``on_start``
*before* it is prepared, which is where the timeline closes its own window, and ``on_stop``
after it stopped. The script's profiler itself runs unchanged: its arguments, its trace
handler and its files are the script's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dsprof.frames import raised_in_signal_handler
from dsprof.headroom import headroom
from dsprof.log import logger

_local = threading.local()
_MARK = "_dsprof_user_session"


@contextmanager
def dsprof_profiler() -> Iterator[None]:
    """Around dsprof's own ``prepare_trace``: the session being prepared is dsprof's."""
    _local.ours = getattr(_local, "ours", 0) + 1
    try:
        yield
    finally:
        _local.ours -= 1


class UserProfilerGuard:
    """Args:
        on_start: the script is about to start a profiler session (dsprof must let go).
        on_stop: the script's profiler session ended.
    """

    def __init__(self, on_start: Callable[[], None], on_stop: Callable[[], None]):
        self.on_start, self.on_stop = on_start, on_stop
        self._saved: tuple[Any, Any, Any] | None = None
        self.active = 0  # the script's sessions open now

    def install(self) -> None:
        from torch.autograd import profiler as autograd_profiler

        cls = autograd_profiler.profile
        prepare, exit_ = cls._prepare_trace, cls.__exit__
        guard = self

        def _prepare_trace(prof: Any, *args: Any, **kwargs: Any) -> Any:
            if not getattr(_local, "ours", 0) and not getattr(prof, _MARK, False):
                setattr(prof, _MARK, True)
                guard.active += 1
                guard._notify(guard.on_start)
            return prepare(prof, *args, **kwargs)

        def __exit__(prof: Any, *args: Any) -> Any:
            try:
                return exit_(prof, *args)
            finally:
                if getattr(prof, _MARK, False):
                    setattr(prof, _MARK, False)
                    guard.active = max(0, guard.active - 1)
                    if guard.active == 0:
                        guard._notify(guard.on_stop)

        self._saved = (cls, prepare, exit_)
        cls._prepare_trace = _prepare_trace
        cls.__exit__ = __exit__

    def uninstall(self) -> None:
        if self._saved is None:
            return
        cls, prepare, exit_ = self._saved
        cls._prepare_trace, cls.__exit__ = prepare, exit_
        self._saved = None

    @staticmethod
    def _notify(fn: Callable[[], None]) -> None:
        try:
            with headroom():  # a window of dsprof's may stop and be written here
                fn()
        except Exception as exc:  # the script's profiler must start regardless
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            logger.error("dsprof could not step aside for the script's profiler: %s: %s",
                         type(exc).__name__, exc)


class HandOvers:
    """meta.json's ``user_profiler``: how many sessions the script ran, the step of the first,
    how many cut a window of dsprof's short, and per session [step it started in, step it
    stopped in]. Empty (``None`` in meta) while the script has run none."""

    def __init__(self) -> None:
        self.sessions = 0
        self.first_step: int | None = None
        self.windows_cut = 0
        self.steps: list[list[int]] = []

    def started(self, step: int, cut: bool) -> None:
        self.sessions += 1
        self.first_step = step if self.first_step is None else self.first_step
        self.windows_cut += int(cut)
        self.steps.append([step, step])

    def stopped(self, step: int) -> None:
        if self.steps:
            self.steps[-1][1] = step

    def to_meta(self) -> dict[str, Any] | None:
        return ({"sessions": self.sessions, "first_step": self.first_step,
                 "windows_cut": self.windows_cut, "steps": self.steps}
                if self.sessions else None)
