"""The script's Python signal handlers run outside dsprof's step-boundary work.

Python runs a signal handler on the main thread at the next bytecode, wherever that is: inside
dsprof's work at a step boundary too, where the profiler's window starts, stops and writes its
trace. A handler that raises (a ``signal.alarm`` time limit, a preemption signal) then raised
inside that work. Caught by dsprof's catch-alls, it never reached the script: a job with a 2 s
``alarm`` trained on for 10 minutes (1 run in 21). Let through, it left torch's profiler half
started ("Profiler is already enabled on this thread") and the process died of SIGSEGV at its
exit (3 runs in 4 with a 5 ms ``setitimer``).

So while dsprof is installed, a Python handler of the script's is called through a wrapper:
during dsprof's boundary work (:func:`deferred`) the call waits, and runs as that work ends,
in the same order, before control returns to the script; its exception is then the script's,
raised where the script's call into the step (``optimizer.step()``, ``backward()``) is.
``signal.signal`` and ``signal.getsignal`` are replaced so that the script sets and reads its
own handlers as without dsprof (``getsignal`` returns the script's function, not the
wrapper); dsprof's own handlers (SIGTERM's, the capture cap's) are installed as they are.
A handler that only sets a flag behaves the same, a little later.

dsprof's own handlers are installed only over the default, and the script reads the default
where one stands (``getsignal`` and the previous handler ``signal`` returns): Lightning's
Trainer chains the SIGTERM handler it finds, so it called dsprof's, which raised SystemExit
mid-batch where plain Lightning stops at the batch's end (``on_exception`` got SystemExit, not
SIGTERMException, and the process exited 143, not 0). A handler of dsprof's the script's
replaced is put back where the script sets the default again (Lightning's teardown puts back
what it found): the run is still saved on a later SIGTERM. dsprof's own code reads and sets
the real handlers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Generator
from types import CodeType, FrameType
from typing import Any

from dsprof.frames import OWN_CODES
from dsprof.headroom import headroom

_real_signal = signal.signal
_real_getsignal = signal.getsignal
_handlers: dict[int, Any] = {}  # signal -> the script's handler, where its wrapper stands in
_displaced: dict[int, Any] = {}  # signal -> dsprof's own handler the script's replaced
_pending: list[tuple[int, FrameType | None]] = []
_deferring = 0
_installed = False
_held_codes: set[CodeType] = set()


def install() -> None:
    """From now on the script's handlers go through wrappers (main thread, at session start);
    those it set before are wrapped now."""
    global _installed
    if _installed:
        return
    for signum in signal.valid_signals():
        try:
            handler = _real_getsignal(signum)
        except (OSError, ValueError):
            continue
        if _the_scripts(handler):
            try:
                _real_signal(signum, _wrapper(signum))
                _handlers[signum] = handler
            except (OSError, ValueError):
                continue
    signal.signal = _signal  # type: ignore[assignment]
    signal.getsignal = _getsignal  # type: ignore[assignment]
    _installed = True


def uninstall() -> None:
    """The script's own handlers back in place, and ``signal``'s functions."""
    global _installed
    if not _installed:
        return
    signal.signal = _real_signal
    signal.getsignal = _real_getsignal
    for signum, handler in list(_handlers.items()):
        try:
            if _is_wrapper(_real_getsignal(signum)):
                _real_signal(signum, handler)
        except (OSError, ValueError):  # not the main thread: the wrapper calls it anyway
            continue
    _handlers.clear()
    _displaced.clear()
    _installed = False


@contextlib.contextmanager
def deferred() -> Generator[None, None, None]:
    """dsprof's work in the block runs whole: a script's handler that fires meanwhile runs as
    the block ends (where its exception is the script's). The block has stack headroom above
    the script's recursion limit (:mod:`dsprof.headroom`)."""
    global _deferring
    _deferring += 1
    try:
        with headroom():  # the script's limit is back before its handlers run
            yield
    finally:
        _deferring -= 1
        if not _deferring and _pending:
            _run_pending()


def deferring(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` runs as in :func:`deferred` (a decorator for dsprof's step-boundary work), with
    stack headroom above the script's recursion limit (:mod:`dsprof.headroom`)."""

    import torch

    is_compiling = torch.compiler.is_compiling

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        global _deferring
        if is_compiling():  # Dynamo inlining a hook (a compiled opt.step): the hook alone
            return fn(*args, **kwargs)
        _deferring += 1
        try:
            with headroom():
                return fn(*args, **kwargs)
        finally:
            _deferring -= 1
            if not _deferring and _pending:
                _run_pending()

    return run


def defer_in(code: CodeType) -> None:
    """Defer the script's handlers in the frames of ``code`` and below: code Python runs for
    dsprof where an exception cannot reach the script (a weakref callback: Python prints
    "Exception ignored" and drops it; a time limit's error was lost there). A signal that
    comes in C code (tensors freed) is handled at the next bytecode, which is often such a
    callback's first; the handlers then run at the next end of dsprof's work
    (:func:`deferred`), a step later at most."""
    _held_codes.add(code)


def _held(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code in _held_codes:
            return True
        frame = frame.f_back
    return False


def _run_pending() -> None:
    calls = list(_pending)
    _pending.clear()
    for signum, frame in calls:
        handler = _handlers.get(signum)
        if callable(handler):
            handler(signum, frame)


def _wrapper(signum: int) -> Callable[[int, FrameType | None], Any]:
    def handler(sig: int, frame: FrameType | None) -> Any:
        if _deferring or (_held_codes and _held(frame)):
            _pending.append((sig, frame))
            return None
        script = _handlers.get(signum)
        if not callable(script):
            return None
        try:
            return script(sig, frame)
        except BaseException as exc:
            # the script's own `except` prints the frames it prints without dsprof
            if exc.__traceback__ is not None and exc.__traceback__.tb_frame is not None \
                    and exc.__traceback__.tb_frame.f_code is handler.__code__:
                exc.__traceback__ = exc.__traceback__.tb_next
            raise

    handler._dsprof_wrapper = True  # type: ignore[attr-defined]
    return handler


def _signal(signum: int, handler: Any) -> Any:
    if _from_dsprof():
        previous = _real_view(signum)
        _displaced.pop(signum, None)  # dsprof sets its own signal's handler itself
    else:
        previous = _scripts_view(signum)
        current = _real_getsignal(signum)
        if _is_own(current):
            _displaced[signum] = current
        if handler is signal.SIG_DFL and signum in _displaced:
            # the default again, as the script sees it: dsprof's own, which it had replaced
            handler = _displaced.pop(signum)
    if _the_scripts(handler):
        _real_signal(signum, _wrapper(signum))
        _handlers[signum] = handler
    else:
        _real_signal(signum, handler)
        _handlers.pop(signum, None)
    return previous


def _getsignal(signum: int) -> Any:
    return _real_view(signum) if _from_dsprof() else _scripts_view(signum)


def _real_view(signum: int) -> Any:
    """The handler in place, the script's own where its wrapper stands in: dsprof's view."""
    handler = _real_getsignal(signum)
    if _is_wrapper(handler):
        return _handlers.get(signum, handler)
    return handler


def _scripts_view(signum: int) -> Any:
    """What the script would find without dsprof: the default where dsprof's own stands."""
    handler = _real_view(signum)
    return signal.SIG_DFL if _is_own(handler) else handler


def _from_dsprof() -> bool:
    """The caller of ``signal.signal`` / ``signal.getsignal`` is dsprof's own code."""
    name = sys._getframe(2).f_globals.get("__name__") or ""
    return name == "dsprof" or name.startswith("dsprof.")


def _is_own(handler: Any) -> bool:
    """A handler of dsprof's own (SIGTERM's, the capture cap's), not a wrapper."""
    if not callable(handler) or _is_wrapper(handler):
        return False
    module = getattr(handler, "__module__", None) or ""
    return module.startswith("dsprof.")


def _the_scripts(handler: Any) -> bool:
    """A Python function of the script's or a library's (not SIG_DFL / SIG_IGN / None, not
    Python's own SIGINT handler, not dsprof's)."""
    if not callable(handler) or handler is signal.default_int_handler or _is_wrapper(handler):
        return False
    module = getattr(handler, "__module__", None) or ""
    return not module.startswith("dsprof.")


def _is_wrapper(handler: Any) -> bool:
    return bool(getattr(handler, "_dsprof_wrapper", False))


def _forked() -> None:
    """A child forked during dsprof's work (a trace write's helper) defers nothing."""
    global _deferring
    _deferring = 0
    _pending.clear()


# a frame of the wrapper is never shown in a traceback the script prints
OWN_CODES.add(_wrapper(0).__code__)
os.register_at_fork(after_in_child=_forked)
