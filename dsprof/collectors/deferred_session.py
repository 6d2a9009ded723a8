"""``dsprof run``'s session, started when the script imports torch
(:mod:`dsprof.collectors.torch_arrival`).

Before the script runs, only what needs no torch is done: the run's lock is taken (a reader
never sees the run without its writer) and how dsprof was started is kept (``sys.argv``,
the working directory and the environment are the script's by the time torch loads). The
session itself, with every collector, starts at the end of the script's ``import torch``.

A script that never imports torch, or ends before it does, gets its session when it has ended:
the run is then saved and reported as every run is (no steps were seen). A process the
script forks before torch loads is not the session and starts none.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dsprof import interpreter_options
from dsprof.apply import from_env as knobs_from_env
from dsprof.collectors import python_children, script_signals, torch_arrival
from dsprof.log import SESSION_NOT_STARTED, logger
from dsprof.ranks import RankEnv, die_with_launcher
from dsprof.rundir import RunDir
from dsprof.runlock import RunLock
from dsprof.runlock import acquire as acquire_lock
from dsprof.settings import Settings

if TYPE_CHECKING:
    from dsprof.collectors.session import Session


class DeferredSession:
    """Args: as :class:`dsprof.collectors.session.Session`'s."""

    def __init__(self, settings: Settings, run: RunDir, target: dict[str, Any], ranks: RankEnv):
        self._args = (settings, run, target, ranks)
        self._started_as = {"argv": list(sys.argv), "cwd": os.getcwd(),
                            "environ": dict(os.environ),
                            "interpreter_options": interpreter_options.of_this_process()}
        # a knob whose value does not parse stops dsprof before the script runs, as it did
        # when the session started first (the session parses them again for its device)
        knobs_from_env(self._started_as["environ"], _device_kind_guess())
        if ranks.launched:
            die_with_launcher()  # a launcher killed outright takes its ranks with it, torch or not
        self.lock: RunLock | None = None
        if not ranks.distributed or ranks.coordinator:
            self.lock = acquire_lock(run)
        self.session: Session | None = None
        self.failed: BaseException | None = None  # the session could not start
        self.after_start: list[Callable[[Session], None]] = []
        self._pid = os.getpid()
        self._start_lock = threading.Lock()
        self._main_call: _MainThreadCall | None = None

    @property
    def in_forked_child(self) -> bool:
        """This is a process the script forked (before or after torch loaded)."""
        return os.getpid() != self._pid or (self.session is not None
                                            and self.session.forked_child)

    def start_when_torch_loads(self) -> None:
        """Main thread, before the script runs."""
        # the Python children the script starts (python_children.py), from its first line: a
        # driver that only runs `python train.py` never imports torch. (A rank's are the job's.)
        if not self._args[3].distributed:
            python_children.install()
        self._main_call = _MainThreadCall(self.start)
        torch_arrival.when_torch_loads(self._torch_loaded)

    def _torch_loaded(self) -> None:
        """On the main thread, start now. A script may import torch in another thread (a
        loader thread it then joins): the profiler records the thread that starts it, so the
        session then starts on the main thread at its next bytecode, before that thread can
        use torch (:class:`_MainThreadCall`), or in this thread where that cannot be done."""
        call = self._main_call
        if threading.current_thread() is threading.main_thread() or call is None or \
                not call.ask():
            if call is not None:
                call.cancel()
            self.start()

    def start(self, after_script: bool = False) -> None:
        """Start the session (once; in a forked child, never). A session that fails to start
        leaves the script running unprofiled, with one error line. ``after_script``: the
        script has ended without importing torch (meta.json says so)."""
        with self._start_lock:
            if self.session is not None or self.failed is not None or \
                    os.getpid() != self._pid:
                return
            from dsprof.collectors.session import Session

            settings, run, target, ranks = self._args
            session: Session | None = None
            try:
                session = Session(settings, run, target, ranks, lock=self.lock,
                                  started_as={**self._started_as, "after_script": after_script})
                with script_signals.deferred():  # its profiler starts whole
                    session.start()
            except Exception as exc:  # noqa: BLE001 - the script runs on, unprofiled
                self.failed = exc
                logger.error("%s (%s: %s); the script runs unprofiled", SESSION_NOT_STARTED,
                             type(exc).__name__, exc)
                try:
                    if session is not None:
                        session.stop_collectors(save=False)
                except Exception:  # noqa: BLE001, S110 - best effort on a half-started session
                    pass
                return
            self.session = session
        for call in self.after_start:
            call(session)

    def start_if_not_yet(self) -> Session | None:
        """After the script: the session, started now if torch never loaded."""
        torch_arrival.stop_waiting()
        if self._main_call is not None:
            self._main_call.cancel()
        if self.session is None and self.failed is None:
            self.start(after_script=True)
        python_children.stop()  # the script has ended
        return self.session

    def finish(self, exit_status: int, reason: str, error: str | None = None) -> None:
        """The SIGTERM thread's save: the session's, if it started (nothing was collected
        before it did)."""
        if self.session is not None:
            self.session.finish(exit_status, reason, error)


def _device_kind_guess() -> str:
    """Without torch: ``cpu`` where the machine has no GPU device node (then torch finds no
    accelerator either), else ``cuda``, which parses every knob value some device accepts."""
    return "cuda" if any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd")) else "cpu"


class _MainThreadCall:
    """``call()`` run by the main thread at its next bytecode boundary when another thread
    asks, as the capture's cap is (:mod:`dsprof.collectors.capture_cap`:
    ``_thread.interrupt_main`` on a real-time signal, no OS signal sent). Only the main
    thread can install a signal handler, so it is installed now, before the script runs, and
    only where that signal is at its default; it goes as soon as torch has loaded."""

    def __init__(self, call: Callable[[], None]) -> None:
        from dsprof.collectors.capture_cap import SIGNAL

        self._call = call
        self._signal: int | None = None
        if SIGNAL is None:
            return
        try:
            if signal.getsignal(SIGNAL) is signal.SIG_DFL:
                signal.signal(SIGNAL, self._handler)
                self._signal = SIGNAL
        except (ValueError, OSError):
            pass

    def ask(self) -> bool:
        """From another thread: have the main thread call. False where the handler is not
        (or no longer) in place."""
        sig = self._signal
        if sig is None or signal.getsignal(sig) != self._handler:
            return False
        _thread.interrupt_main(sig)
        return True

    def cancel(self) -> None:
        """The handler goes, if still ours (main thread only; elsewhere it stays until the
        main thread's call, which then finds the session started)."""
        sig, self._signal = self._signal, None
        if sig is None:
            return
        try:
            if signal.getsignal(sig) == self._handler:
                signal.signal(sig, signal.SIG_DFL)
        except ValueError:
            self._signal = sig

    def _handler(self, signum: int, frame: Any) -> None:
        self.cancel()
        self._call()
