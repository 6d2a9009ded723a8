"""SIGTERM that ends a ``dsprof run`` process with the script's data saved, even while the main
thread is blocked in C++ (a gloo destructor, a collective, a ``join``) where a Python-level
handler never runs.

How: SIGTERM gets a Python handler that raises ``SystemExit(143)`` into the script (the normal
path: the session saves everything on the way out), and :func:`signal.set_wakeup_fd` makes the
C-level part of every Python signal handler write the signal number to a socket, from whatever
thread, without needing the interpreter. A daemon thread waits on that socket (the GIL is free
while it waits). When SIGTERM arrives and the process has not ended ``grace_s`` later (or a
second SIGTERM comes), the thread saves the session itself and ends the process with
``os._exit(143)``. A C-level watchdog (``faulthandler``) bounds that save.

Why not block SIGTERM in every thread and ``sigwait`` for it: a blocked signal mask is inherited
by every process the script starts (``subprocess``, ``multiprocessing`` spawn, DataLoader
workers), which then could no longer be stopped with SIGTERM. The wakeup socket leaves the
script's children as they would be without dsprof.

The thread only acts while SIGTERM is still dsprof's: a script that installs its own SIGTERM
handler keeps it, and dsprof steps aside. What cannot be helped from Python: a main thread
blocked in C++ while *holding* the GIL (no Python thread can run then); keeping the script's
objects alive until interpreter exit (:mod:`dsprof.launch`) avoids the known case.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from dsprof import script_watchdog
from dsprof.hidden_threads import HiddenThread
from dsprof.log import logger

EXIT_STATUS = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERM'd program
DEFAULT_GRACE_S = 5.0


_signalled = False  # a SIGTERM reached _raise_exit in this process


def _raise_exit(signum: int, frame: Any) -> None:
    global _signalled
    _signalled = True
    raise SystemExit(128 + signum)


def signalled() -> bool:
    """Whether the ``SystemExit`` the script ends with came from a SIGTERM (not its own
    ``sys.exit(143)``)."""
    return _signalled


def die_of_sigterm() -> None:
    """End this process as SIGTERM's default action would (exit status -15 to its parent),
    once the run is saved: a rank of ``torch.multiprocessing.spawn`` ends as it would without
    dsprof. ``os._exit(143)`` if the signal does not end it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - a closed stream must not stop the exit
            pass
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        os.kill(os.getpid(), signal.SIGTERM)
    except (ValueError, OSError):
        pass
    os._exit(EXIT_STATUS)


def _hold(signum: int, frame: Any) -> None:
    """After the script returned: no exception into dsprof's own saving; the watcher thread
    ends the process once the run is saved."""


class TermWatcher:
    """Args:
        save: saves whatever the session collected (idempotent; called from the watcher
            thread when the main thread does not end in time).
        grace_s: how long the main thread gets to end the normal way after SIGTERM.
    """

    def __init__(self, save: Callable[[], None], grace_s: float = DEFAULT_GRACE_S,
                 by_signal: bool = False):
        self.save, self.grace_s = save, grace_s
        self.by_signal = by_signal  # end by the signal itself (-15), not exit status 143
        self._previous: Any = None
        self._old_fd = -1
        self._socks: tuple[socket.socket, socket.socket] | None = None
        self._thread: HiddenThread | None = None
        self._installed = False

    def install(self) -> bool:
        """In the main thread; False (and nothing changed) when SIGTERM is not at its default
        (the caller's process handles it) or this is not the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        rsock, wsock = socket.socketpair()
        wsock.setblocking(False)
        try:
            self._old_fd = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
            self._previous = signal.signal(signal.SIGTERM, _raise_exit)
        except (ValueError, OSError):
            rsock.close()
            wsock.close()
            return False
        self._socks = (rsock, wsock)
        self._installed = True
        # not in the script's threading.enumerate(): a script that joins every thread but its
        # own waited forever on this one (dsprof/hidden_threads.py)
        self._thread = HiddenThread(self._watch, "dsprof-sigterm")
        self._thread.start()
        return True

    def hold(self) -> None:
        """The script returned: a SIGTERM from now on waits for the save, then exits 143."""
        if self._installed and signal.getsignal(signal.SIGTERM) is _raise_exit:
            signal.signal(signal.SIGTERM, _hold)

    def uninstall(self) -> None:
        """Give SIGTERM back (main thread). The watcher thread stays parked on its socket."""
        if not self._installed:
            return
        self._installed = False
        try:
            if signal.getsignal(signal.SIGTERM) in (_raise_exit, _hold):
                signal.signal(signal.SIGTERM, self._previous)
            signal.set_wakeup_fd(self._old_fd)
        except (ValueError, OSError):
            pass

    def forget_in_child(self) -> None:
        """In a forked child (no watcher thread there): SIGTERM back to the default, no wakeup
        socket, as the child would be without dsprof."""
        if not self._installed:
            return
        self._installed = False
        try:
            if signal.getsignal(signal.SIGTERM) in (_raise_exit, _hold):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError):
            pass

    # -- the watcher thread ---------------------------------------------------------------
    def _watch(self) -> None:
        assert self._socks is not None
        rsock = self._socks[0]
        deadline = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            rsock.settimeout(timeout)
            try:
                data = rsock.recv(64)
            except TimeoutError:
                data = b""
            except OSError:
                return
            terms = data.count(bytes([signal.SIGTERM]))
            if terms and not self._ours():
                continue  # the script's own handler (or the default) owns SIGTERM now
            if deadline is not None and (terms or time.monotonic() >= deadline):
                self._end()
                return
            if terms:
                if terms > 1:
                    self._end()
                    return
                deadline = time.monotonic() + self.grace_s

    def _ours(self) -> bool:
        return self._installed and signal.getsignal(signal.SIGTERM) in (_raise_exit, _hold)

    def _end(self) -> None:
        """The main thread did not end in time: save from here, then exit."""
        # bounds the save itself, even if it blocks in C with the GIL taken from us
        # (faulthandler's own function: no watchdog of the script's, script_watchdog.py)
        script_watchdog.ARM(max(self.grace_s, 5.0), exit=True)
        logger.warning("SIGTERM: the script did not stop within %.0f s (blocked outside "
                       "Python); saving the run and exiting", self.grace_s)
        try:
            self.save()
        except BaseException as exc:  # noqa: BLE001 - exiting is all that is left to do
            logger.error("could not save the run on SIGTERM: %s: %s", type(exc).__name__, exc)
        if self.by_signal:
            die_of_sigterm()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - a closed stream must not stop the exit
                pass
        os._exit(EXIT_STATUS)


def grace_from_env() -> float:
    """``DSPROF_TERM_GRACE_S``: seconds the script gets to end after SIGTERM."""
    try:
        return max(0.0, float(os.environ.get("DSPROF_TERM_GRACE_S", DEFAULT_GRACE_S)))
    except ValueError:
        return DEFAULT_GRACE_S
