"""The bootstrap capture's cap where no dsprof hook runs: a script's bare tensor ops.

The capture of step 0 lasts until the first step boundary, or ``max_capture_s`` (default 60 s)
when none comes. The cap was checked at module calls and at ``backward()`` only, the points
where dsprof's code runs in the script's thread. A preprocessing loop of bare tensor ops
(``torch.randn(256, 64).tanh().sum(0)`` per sample, no module) ran past it unchecked: with
``--max-capture 3`` its 6 s of setup were captured whole, 484,543 events in a 191 MB trace,
and the process's peak RSS went from 0.90 GB (plain) to 2.84 GB while Kineto held the events.
A longer setup would grow without bound.

Kineto must be stopped from the thread that records (:mod:`dsprof.collectors.timeline`), at a
point where the script's code is between two Python operations, as a module hook is. A timer
thread cannot stop it; it can make the main thread run a Python handler at its next bytecode
boundary: ``_thread.interrupt_main(signum)`` marks the signal's Python handler pending with no
OS signal sent, so no system call of the script is interrupted. The handler is installed for a
real-time signal nobody uses (``SIGRTMAX - 7``), only while the bootstrap capture lasts, and
only where that signal is at its default (a handler of the script's is never replaced); it is
restored as soon as the capture ends. Not armed off the main thread (``dsprof.profile()`` in a
worker thread keeps the hook checks), nor where the platform has no real-time signals.
"""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

SIGNAL: int | None = (int(signal.SIGRTMAX) - 7) if hasattr(signal, "SIGRTMAX") else None
RETRY_S = 1.0
"""How long a handler that found the capture busy (a compile under way) waits to check again."""


class CapAlarm:
    """Calls ``fire`` on the main thread, between bytecodes, once ``deadline()`` (a
    ``time.perf_counter`` value, which may move later) has passed."""

    def __init__(self, deadline: Callable[[], float], fire: Callable[[], None]):
        self._deadline = deadline
        self._fire = fire
        self._timer: threading.Timer | None = None
        self._installed = False
        self._lock = threading.Lock()

    def arm(self) -> bool:
        """Install the handler and start the timer; False where it cannot be done safely."""
        if SIGNAL is None or threading.current_thread() is not threading.main_thread():
            return False
        try:
            if signal.getsignal(SIGNAL) is not signal.SIG_DFL:
                return False  # the script's, or a library's: never replaced
            signal.signal(SIGNAL, self._handler)
        except (ValueError, OSError):
            return False
        self._installed = True
        self._schedule(self._deadline() - time.perf_counter())
        return True

    def disarm(self) -> None:
        """Stop the timer and put the signal back at its default (main thread only)."""
        with self._lock:
            timer, self._timer = self._timer, None
            installed, self._installed = self._installed, False
        if timer is not None:
            timer.cancel()
        if installed and SIGNAL is not None:
            try:
                if signal.getsignal(SIGNAL) == self._handler:
                    signal.signal(SIGNAL, signal.SIG_DFL)
            except ValueError:  # not the main thread: a pending ring finds the flag off
                pass

    def _schedule(self, delay: float) -> None:
        timer = threading.Timer(max(0.0, delay), self._ring)
        timer.daemon = True
        timer.name = "dsprof-capture-cap"
        with self._lock:
            if not self._installed:
                return
            self._timer = timer
        timer.start()

    def _ring(self) -> None:
        """Timer thread: make the main thread run :meth:`_handler` at its next bytecode."""
        if self._installed and SIGNAL is not None and signal.getsignal(SIGNAL) == self._handler:
            _thread.interrupt_main(SIGNAL)

    def _handler(self, signum: int, frame: Any) -> None:
        """Main thread. Before the deadline (it moved: a compile's time is not counted), or
        while Dynamo compiles, check again later; else the cap is reached."""
        if not self._installed:
            return
        left = self._deadline() - time.perf_counter()
        if left > 0:
            self._schedule(left)
            return
        if _compiling():
            self._schedule(RETRY_S)
            return
        self._fire()
        if self._installed:  # the capture did not end there (a torch.jit.trace under way)
            self._schedule(RETRY_S)


def _compiling() -> bool:
    """Dynamo or Inductor is at work on this thread (stopping the profiler then is no clean
    point of the script's)."""
    import sys

    guards = sys.modules.get("torch._guards")
    if guards is None:
        return False
    try:
        return guards.TracingContext.try_get() is not None
    except Exception:  # noqa: BLE001 - an older or newer torch without it: not compiling
        return False


class CaptureCap:
    """The bootstrap capture's time cap, checked at every module call (a global forward
    pre-hook, unless ``module_hooks`` is off: torch.compile), by a :class:`CapAlarm` where no
    hook runs, and by :meth:`check` where the timeline polls (each backward() under
    torch.compile). Past ``deadline`` on the recording thread, ``reached`` is called once
    (outside ``torch.jit.trace``, which records every op: the next call stops it)."""

    def __init__(self, max_s: float, reached: Callable[[], None], module_hooks: bool):
        self.deadline = time.perf_counter() + max_s
        self._reached = reached
        self._thread = threading.get_ident()
        self._hook: Any = None
        if module_hooks:
            from torch.nn.modules.module import register_module_forward_pre_hook

            self._hook = register_module_forward_pre_hook(self._module_called)
        self._alarm: CapAlarm | None = CapAlarm(lambda: self.deadline, self.check)
        self._alarm.arm()

    def extend(self, ns: int) -> None:
        """Compilation took ``ns``: it does not count against the cap."""
        self.deadline += ns / 1e9

    def _module_called(self, module: Any, args: Any) -> None:
        self.check()

    def check(self) -> None:
        if time.perf_counter() < self.deadline or threading.get_ident() != self._thread:
            return
        import torch

        if torch._C._get_tracing_state() is not None:
            return
        self.remove()
        self._reached()

    def remove(self, keep_alarm: bool = False) -> None:
        """No check from here on (``keep_alarm``: the module hook only)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._alarm is not None and not keep_alarm:
            self._alarm.disarm()
            self._alarm = None
