"""The script's ``faulthandler`` watchdog, paused while dsprof's end-of-run work runs.

A script can arm ``faulthandler.dump_traceback_later(timeout, repeat, file, exit)``: a C
thread that dumps every thread's stack after ``timeout`` seconds (and ends the process with
``exit=True``) unless cancelled, a hang detector. Plain Python then runs the script's atexit
handlers and finalises, with the watchdog still armed. Under dsprof the run's save, ingest,
analysis and summary (about a second for a tiny script here) come between the script's last
line and those handlers: a watchdog armed near the end fired inside dsprof's work, dumped
dsprof's frames into the script's file, and with ``exit=True`` ended the process with status 1
before the run was analysed (measured: ``dump_traceback_later(0.8, exit=True)`` at the last
line, plain exit 0, dsprof exit 1). Python offers no way to ask whether a watchdog is armed,
so dsprof keeps track of the script's calls (:func:`track`, before the script runs), cancels
the watchdog when the script's code has returned (:func:`pause`) and arms it again with the
time it had left before the script's atexit handlers run (:func:`resume`), with the module's
own functions back. A repeating watchdog is armed again with its period, counted from then.

dsprof's own use (its SIGTERM save, :mod:`dsprof.terminate`) goes through :data:`ARM`, the
module's function, and is no watchdog of the script's.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import time
from typing import Any

ARM = faulthandler.dump_traceback_later
CANCEL = faulthandler.cancel_dump_traceback_later

# the script's armed watchdog: (timeout, repeat, file, exit, monotonic time armed, pid), or
# None (a forked child has no watchdog thread: the parent's is not its own)
_armed: list[tuple[float, bool, Any, bool, float, int] | None] = [None]
# what was left at the pause: (seconds left, timeout, repeat, file, exit), or None
_paused: list[tuple[float, float, bool, Any, bool] | None] = [None]


@functools.wraps(ARM)
def dump_traceback_later(timeout: float, repeat: bool = False, file: Any = None,
                         exit: bool = False) -> None:  # faulthandler's keyword names
    if file is None:
        ARM(timeout, repeat=repeat, exit=exit)
    else:
        ARM(timeout, repeat=repeat, file=file, exit=exit)
    _armed[0] = (float(timeout), bool(repeat), file, bool(exit), time.monotonic(), os.getpid())


@functools.wraps(CANCEL)
def cancel_dump_traceback_later() -> None:
    CANCEL()
    _armed[0] = None


def track() -> None:
    """Before the script runs: its calls to arm or cancel the watchdog are noted."""
    faulthandler.dump_traceback_later = dump_traceback_later
    faulthandler.cancel_dump_traceback_later = cancel_dump_traceback_later


def _untrack() -> None:
    if faulthandler.dump_traceback_later is dump_traceback_later:
        faulthandler.dump_traceback_later = ARM
    if faulthandler.cancel_dump_traceback_later is cancel_dump_traceback_later:
        faulthandler.cancel_dump_traceback_later = CANCEL


def pause() -> None:
    """The script's code has returned: its watchdog, if armed, stops until :func:`resume`."""
    armed, _armed[0] = _armed[0], None
    _untrack()
    if armed is None:
        return
    timeout, repeat, file, exit_, since, pid = armed
    left = timeout - (time.monotonic() - since)
    CANCEL()
    if pid != os.getpid():
        return
    if left > 0 or repeat:  # a one-shot watchdog past its time has fired already
        _paused[0] = (left, timeout, repeat, file, exit_)


def resume() -> None:
    """Before the script's atexit handlers: its watchdog armed again with the time it had left;
    a repeating one with its period, counted from then (faulthandler has no first delay of
    its own for a repeating watchdog)."""
    paused, _paused[0] = _paused[0], None
    if paused is None:
        return
    left, timeout, repeat, file, exit_ = paused
    kwargs: dict[str, Any] = {"exit": exit_} if file is None else {"file": file, "exit": exit_}
    ARM(timeout if repeat else left, repeat=repeat, **kwargs)
