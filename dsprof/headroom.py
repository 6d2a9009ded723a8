"""Stack headroom for dsprof's work on the script's stack.

dsprof's session starts at the end of the script's ``import torch``, and its windows start and
stop in the script's ``optimizer.step()`` / ``backward()``: on top of the script's frames,
under the script's recursion limit. A script that set ``sys.setrecursionlimit(250)`` at its
top ran plain, but under dsprof no step was profiled: the first window's
``profile.prepare_trace()`` imported ``torch._dynamo`` (torch's lazy ``__getattr__``; it no
longer does where the script has not: :mod:`dsprof.collectors.inductor_untouched`), 189
frames deep from there, on top of the script's ``import torch``, and raised RecursionError
("timeline collector failed and is off for the rest of the run").

:func:`headroom` raises the limit by :data:`FRAMES` for the block's duration where the stack
has fewer than :data:`NEEDED` frames left under the limit (a low limit, a deep stack), and puts
the script's own value back after it, also when the block raises. The script's code never
runs inside such a block (its signal handlers wait until the block ends:
:mod:`dsprof.collectors.script_signals`), so ``sys.getrecursionlimit()`` at any line of the
script gives its own value. The limit is the interpreter's, not a thread's: while a block
raises it, the script's other threads read the raised value and may recurse that deep; so a
block raises it only where the stack is short of frames, and a script at the default limit
(1000) with a stack under 600 frames deep never sees it change. Blocks on several threads at
once share one raise, and the last to end restores the value.
"""

from __future__ import annotations

import sys
import threading

FRAMES = 1000
"""Frames dsprof's work may use above where it is called, where the stack is short of
:data:`NEEDED`: Python's default limit, five times what the deepest case seen needed (the
``torch._dynamo`` import, 189)."""
NEEDED = 400
"""Frames left under the limit that spare the raise: twice that deepest case."""

_lock = threading.RLock()  # re-entrant: a handler of dsprof's may run inside a block's entry


class _Headroom:
    """The context manager :func:`headroom` returns (a class, not a generator: it wraps every
    step-boundary hook: 0.95 us a block against 1.3 us through ``contextlib``)."""

    open = 0  # blocks open now, on every thread
    raising = False  # the limit is raised, until the last open block ends
    scripts = 0  # the script's limit, while raised
    raised = 0  # the limit dsprof set it to

    def __enter__(self) -> None:
        with _lock:
            if not _Headroom.raising and _short_of_frames():
                _Headroom.scripts = sys.getrecursionlimit()
                _Headroom.raised = _Headroom.scripts + FRAMES
                sys.setrecursionlimit(_Headroom.raised)
                _Headroom.raising = True
            _Headroom.open += 1

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _Headroom.open -= 1
            if _Headroom.open == 0 and _Headroom.raising:
                _Headroom.raising = False
                if sys.getrecursionlimit() == _Headroom.raised:
                    sys.setrecursionlimit(_Headroom.scripts)


def _short_of_frames() -> bool:
    """Fewer than :data:`NEEDED` frames left under the limit on this thread's stack
    (``sys._getframe(n)`` walks n frames in C, and raises where the stack is shallower)."""
    try:
        sys._getframe(max(sys.getrecursionlimit() - NEEDED, 0))
    except ValueError:
        return False
    return True


_HEADROOM = _Headroom()


def headroom() -> _Headroom:
    """dsprof's work in the block (``with headroom():``) has :data:`FRAMES` more frames of
    recursion limit; the script's value is back when the last open block ends, also when the
    block raises. A limit someone else set meanwhile (not dsprof's raise) is left as they set
    it."""
    return _HEADROOM
