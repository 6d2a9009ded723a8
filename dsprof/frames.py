"""Which source files are the user's: the line a finding or an allocation points at is the
innermost frame outside torch, dsprof and the standard library. Shared by the collectors (live
frames) and ingest (recorded stacks)."""

from __future__ import annotations

import functools
import os
import sysconfig
from types import CodeType
from typing import Any

DSPROF_DIR = os.path.dirname(os.path.abspath(__file__))
_OWN_PREFIX = DSPROF_DIR + os.sep
_STDLIB = sysconfig.get_paths()["stdlib"]


@functools.lru_cache(maxsize=4096)
def internal_file(filename: str) -> bool:
    """Code of torch, dsprof or the standard library: not where the user acts."""
    if filename.startswith((DSPROF_DIR, "<frozen")) or f"{os.sep}torch{os.sep}" in filename:
        return True
    return standard_library(filename)


def standard_library(filename: str) -> bool:
    """A file of Python's standard library (``logging`` formatting a message, say)."""
    return filename.startswith(_STDLIB) and "site-packages" not in filename


@functools.lru_cache(maxsize=4096)
def shown_path(filename: str) -> str:
    """``filename`` as reports show it: relative to the working directory when it lies below it
    (the script is compiled under its absolute path, as ``python script.py`` does, so that
    tracebacks and warnings read as without dsprof; ``examples/slow_loader.py:63`` is what a
    user typed and finds), and a file of an installed package from the package's folder on."""
    for marker in _PACKAGE_DIRS:  # an installed package: its own path says where
        if marker in filename:
            return filename.split(marker, 1)[1]
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


# ``transformers/trainer_pt_utils.py:164``, not the environment's prefix before it
_PACKAGE_DIRS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")
INSTALLED_DIRS = _PACKAGE_DIRS
"""Where installed packages live: a file below one is a library's, not the script's."""


# code objects whose frames a traceback never shows: those dsprof runs under the script's own
# file name and line (call_at_line.py), and hooks that raise torch's own error for it
OWN_CODES: set[CodeType] = set()


# Python's warnings skip the frames of code whose file name holds "importlib" and "_bootstrap"
# when they count a warning's ``stacklevel`` (importlib's own frames; _warnings.c
# is_internal_frame): a wrapper of dsprof's renamed so is skipped the same way
_SKIPPED_BY_WARNINGS = " (importlib._bootstrap-style: a dsprof wrapper warnings skip)"


def hidden_from_warnings(fn: Any) -> Any:
    """Rename ``fn``'s code so that Python's warnings skip its frame when they count a
    ``stacklevel``. A wrapper of dsprof's around a torch entry point is one frame more
    between the script and torch: torch's ``warnings.warn(..., stacklevel=N)`` then named
    torch's own caller instead of the script's line (a full backward hook's warning read
    ``torch/_tensor.py:623``, where plainly ``train.py:11``), and Python's once-per-location
    filter showed one warning for all of the script's lines. The file name keeps dsprof's
    folder first, so everything that tells dsprof's frames by it still does. Apply before
    ``invisible_to_dynamo`` (it registers the code object)."""
    code = fn.__code__
    if _SKIPPED_BY_WARNINGS not in code.co_filename:
        fn.__code__ = code.replace(co_filename=code.co_filename + _SKIPPED_BY_WARNINGS)
    return fn


def drop_own_frames(exc: BaseException) -> None:
    """Take dsprof's frames off the head of ``exc``'s traceback, in a wrapper of dsprof's that
    passes an error on (``except BaseException as exc: drop_own_frames(exc); raise``): a
    script that catches it and prints or logs it (``traceback.print_exc()``,
    ``logger.exception``) shows the frames it shows without dsprof. The wrapper's frame is the
    head when it catches, and a bare ``raise`` adds no entry for it again."""
    tb = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith(_OWN_PREFIX)
                              or tb.tb_frame.f_code in OWN_CODES):
        tb = tb.tb_next
    exc.__traceback__ = tb
    # deeper in, a hook of dsprof's that raised torch's own error (saved_versions.unpack)
    while tb is not None and tb.tb_next is not None:
        if tb.tb_next.tb_frame.f_code in OWN_CODES:
            tb.tb_next = tb.tb_next.tb_next
        else:
            tb = tb.tb_next


def raised_in_signal_handler(exc: BaseException) -> bool:
    """Whether ``exc`` came out of one of the script's Python signal handlers (a ``SIGALRM``
    time limit, a preemption ``SIGUSR1``): Python runs a handler on the main thread at
    whatever bytecode it is at, dsprof's own included, and a catch-all of dsprof's that kept
    it from the script left a job training past its time limit (1 run in 21 of a 2 s
    ``signal.alarm``). Such a catch-all re-raises it (``if raised_in_signal_handler(exc):
    raise``). Only looked at on the main thread, on the error path."""
    import signal

    from dsprof.hidden_threads import on_main_thread

    if not on_main_thread():  # (current_thread() would make a thread of dsprof's known)
        return False
    codes = set()
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        handler = getattr(handler, "func", handler)  # functools.partial
        code = getattr(getattr(handler, "__func__", handler), "__code__", None)
        if code is not None:
            codes.add(code)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return True
        tb = tb.tb_next
    return False
