"""Optimizers that wrap another without being one to torch: their step is the optimizer phase.

torch times and hooks ``optimizer.step()`` through what ``Optimizer.__init__`` patches into the
optimizer's class (``Optimizer.step#...`` spans, the global step hooks). A library optimizer
that subclasses ``torch.optim.Optimizer`` but never calls its ``__init__``, and steps an
optimizer it holds, is invisible to both: Opacus' ``DPOptimizer`` clips the per-sample
gradients and adds the noise in its own ``step()`` before it calls the SGD or Adam it wraps
(12.4 of a 48 ms DP-SGD step, where the inner ``SGD.step`` took 0.36 ms), and all of it read as
"forward and the rest" (accelerate's ``AcceleratedOptimizer`` is another such class).

When an optimizer first steps, the frames above torch's hook are read once: an enclosing
``step`` whose ``self`` is such an Optimizer and holds the stepping optimizer (an attribute that
is it, as ``original_optimizer`` or ``optimizer`` are) is its wrapper, and the outermost of a
chain wins. That class's own ``step`` function is then wrapped, from its next call on: its
wall time is the step's optimizer phase (``StepRuntime.wrapper_starting``), and a closure it is
given is timed as the optimizer's closures are (the forward and backward it runs are not the
update). Nothing else changes: same arguments, return value and exceptions, one Python frame
more (hidden from warnings' ``stacklevel``); the class gets its function back at the end of the
session (unless torch patched it since: then torch's patch stays, over dsprof's, which then
only calls through). Left alone: classes whose ``step`` torch patched (their ``__init__`` ran:
torch's hooks see them), wrappers that are no Optimizer, and wrappers that pose as the class of
the optimizer they hold (Lightning's ``LightningOptimizer`` and Fabric's optimizer make their
class a subclass of it; their step hands a mixed-precision step's closure on from outside the
inner step, and wrapping it took the whole phase away: "optimizer 0.1%").

The profiled steps' phases do not see the wrapper: an annotation around its step held the
boundary the inner step's hook marks, and torch's profiler then warned on the script's stderr
("Optimizer.step#SGD.step ... collection.cpp:664").
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from dsprof.collectors.compile_watch import invisible_to_dynamo
from dsprof.frames import drop_own_frames, hidden_from_warnings, raised_in_signal_handler
from dsprof.log import FILE_LINE, logger

# frames read above torch's step hook for an enclosing wrapper's step (a chain of two
# wrappers, the hook's own and torch's profiling wrapper fit well within it)
_FRAMES = 24
_SEEN_CAP = 4096  # optimizers already looked at (by id); past it, no more are


class OptimizerWrappers:
    """Finds the wrappers of the optimizers that step and times their ``step`` calls."""

    def __init__(self, runtime: Any, closures: Any) -> None:
        self._runtime = runtime  # StepRuntime: wrapper_starting / wrapper_ended
        self._closures = closures  # ClosureMarker: wrap(closure) times it
        self._seen: set[int] = set()
        # class -> (its own step function before dsprof wrapped it, dsprof's)
        self._wrapped: dict[type, tuple[Any, Any]] = {}
        self.active = False

    def install(self) -> None:
        self.active = True

    def uninstall(self) -> None:
        self.active = False
        for owner, (original, wrapper) in self._wrapped.items():
            # only where the class holds dsprof's function still: torch's own patch of it
            # (Optimizer.__setstate__ of a copy patches the class again) stays
            if owner.__dict__.get("step") is wrapper:
                owner.step = original  # type: ignore[attr-defined]
        self._wrapped.clear()

    @property
    def classes(self) -> list[str]:
        """The wrapper classes whose step is timed (for the run's meta and log)."""
        return [f"{c.__module__}.{c.__qualname__}" for c in self._wrapped]

    def seen(self, optimizer: Any) -> None:
        """Called from the optimizer step pre-hook: look for a wrapper the first time only."""
        key = id(optimizer)
        if not self.active or key in self._seen or len(self._seen) >= _SEEN_CAP:
            return
        self._seen.add(key)
        try:
            found = _enclosing_wrapper(optimizer, sys._getframe(1))
            if found is not None:
                self._wrap(*found)
        except Exception as exc:  # never fail the user's step
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            logger.debug("optimizer wrappers: look-up failed", exc_info=True)

    def _wrap(self, owner: type, original: Any) -> None:
        if owner in self._wrapped:
            return
        runtime, closures = self._runtime, self._closures
        import torch

        is_compiling = torch.compiler.is_compiling
        watch = self

        @functools.wraps(original)
        def step(*args: Any, **kwargs: Any) -> Any:
            if not watch.active or is_compiling():
                return original(*args, **kwargs)
            args, kwargs = closures.timed_in(args, kwargs) or (args, kwargs)
            runtime.wrapper_starting()
            try:
                return original(*args, **kwargs)
            except BaseException as exc:
                drop_own_frames(exc)  # the script's `except` prints what it prints plain
                raise
            finally:
                runtime.wrapper_ended()

        invisible_to_dynamo(hidden_from_warnings(step))
        self._wrapped[owner] = (original, step)
        owner.step = step  # type: ignore[attr-defined]
        logger.info("optimizer phase: %s.%s steps an optimizer torch does not see it as; its "
                    "step() is timed as the optimizer's from its next call", owner.__module__,
                    owner.__qualname__, extra=FILE_LINE)


def _enclosing_wrapper(optimizer: Any, frame: Any) -> tuple[type, Any] | None:
    """The outermost ``step`` frame above ``frame`` whose ``self`` is an unhooked Optimizer
    that holds the optimizer (or holds the wrapper found before it): its class that defines
    that function, and the function."""
    from torch.optim import Optimizer

    target, found = optimizer, None
    for _ in range(_FRAMES):
        frame = frame.f_back
        if frame is None:
            break
        code = frame.f_code
        if code.co_name != "step":
            continue
        holder = frame.f_locals.get("self")
        if holder is None or holder is target or not isinstance(holder, Optimizer):
            continue
        if isinstance(holder, type(target)):
            break  # poses as the optimizer it holds (Lightning, Fabric): theirs, not a wrapper
        if not _holds(holder, target):
            continue
        owner = _defining_class(type(holder), code)
        if owner is None or getattr(owner.__dict__["step"], "hooked", False):
            continue  # torch patched it: its own hooks see this class
        target, found = holder, (owner, owner.__dict__["step"])
    return found


def _holds(holder: Any, target: Any) -> bool:
    try:
        values = vars(holder).values()
    except TypeError:
        return False
    return any(v is target for v in values)


def _defining_class(cls: type, code: Any) -> type | None:
    """The class in ``cls``'s MRO whose own ``step`` runs ``code``."""
    for klass in cls.__mro__:
        fn = klass.__dict__.get("step")
        while fn is not None and getattr(fn, "__code__", None) is not code:
            fn = getattr(fn, "__wrapped__", None)
        if fn is not None:
            return klass
    return None
