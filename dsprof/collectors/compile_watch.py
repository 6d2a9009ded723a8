"""torch.compile in the profiled program: seen early, timed, and left alone.

dsprof must profile the compiled program the user runs. Dynamo traces whatever Python runs
inside a compiled region, hooks included: a hook body it cannot trace is a graph break, and the
*presence* of global module hooks changes what it traces (``Module.__call__`` instead of
``forward``), makes ``OptimizedModule.__call__`` warn, and a hook the trace saw is guarded on
the hook dict's length: removing it later is a recompile (and eight recompiles fall back to
eager). A hook *added* after the trace is not: torch 2.13 CPU, a two-Linear forward compiled
with ``backend="eager"`` as ``torch.compile(module)``, ``Module.compile()`` and a compiled
function (tests/unit/test_compiled_knobs.py): traced with a global forward pre-hook, removing it
recompiled (1 graph, then 2; guard ``len(_global_forward_pre_hooks) != 1``); traced without,
adding one recompiled nothing (1 graph, no guard failure), and the added hook was never called
for the modules inside the compiled code, only for the ``OptimizedModule`` itself. Measured on
a two-block MLP compiled on CPU (tests/integration/test_steps_sources.py): 15 graph breaks and
4 graphs under dsprof before this, 0 and 1 plain.

So once the program uses torch.compile, dsprof takes every global module hook and its
saved-tensor hooks away for the rest of the run (module names and activation charges are not
recorded; inside a compiled graph no module call happens anyway) and never adds them again.
It learns this as early as it can: a wrapper of ``torch.compile`` (which ``Module.compile()``
calls too) fires before the user's first compiled call, and Dynamo's compile-start callback
catches ``torch._dynamo.optimize`` and anything else that reaches Dynamo. The same callbacks
time every compilation (Dynamo's frames and the lazy backward compile), and the first
``torch.compile()`` call, which imports Dynamo and Inductor, counts too; so compile time is
reported as compile time: ``session.json`` ``compile``, and the steps it fell in.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from dsprof.collectors.compile_metrics import DynamoMetrics, recompile_limit
from dsprof.frames import (
    drop_own_frames,
    hidden_from_warnings,
    internal_file,
    raised_in_signal_handler,
    shown_path,
)
from dsprof.log import logger

# code of dsprof's wrappers and hooks -> whether the frames they call are skipped too
_WRAPPER_CODES: dict[Any, bool] = {}
_skipping = False


def invisible_to_dynamo(fn: Callable[..., Any], recursive: bool = False) -> Callable[..., Any]:
    """Mark a wrapper or hook of dsprof's as code Dynamo never compiles.

    After a graph break the rest of a compiled function runs eagerly, but Dynamo still
    evaluates every Python frame it calls: ``x.item()`` there enters dsprof's wrapper, and
    ``loss.backward()`` or ``opt.step()`` dsprof's step bookkeeping; Dynamo would try to compile
    those frames and break on the builtins in them (graph breaks, frames and recompiles the
    plain run has not). ``set_code_exec_strategy`` runs such a frame as plain Python.
    ``recursive=False`` is for a wrapper that calls torch's own function: the frames that calls
    stay Dynamo's, as in the plain run; ``recursive=True`` for dsprof's bookkeeping, all of it
    plain Python. Applied once torch.compile is seen, so a run that never compiles never
    imports Dynamo.
    """
    invisible_code_to_dynamo(fn.__code__, recursive)
    return fn


def invisible_code_to_dynamo(code: Any, recursive: bool = False) -> None:
    """``invisible_to_dynamo`` for a code object that is no function's (code dsprof compiles
    and runs with ``exec``)."""
    _WRAPPER_CODES[code] = recursive
    if _skipping:
        _skip_codes({code: recursive})


def _skip_codes(codes: dict[Any, bool] | None = None) -> None:
    global _skipping
    from torch._dynamo.eval_frame import set_code_exec_strategy
    from torch._dynamo.types import FrameAction, FrameExecStrategy

    _skipping = True
    for code, recursive in list((_WRAPPER_CODES if codes is None else codes).items()):
        set_code_exec_strategy(code, FrameExecStrategy(
            FrameAction.SKIP, FrameAction.SKIP if recursive else FrameAction.DEFAULT))


# torch.compile() calls under way: the first imports Dynamo (a second here, several on a loaded
# machine), compile time the capture's cap does not count (capture_cap.py), though no Dynamo
# tracing context is open yet
_CALLS_RUNNING = [0]


def compile_call_running() -> bool:
    """A ``torch.compile()`` call of the script's is under way (on any thread)."""
    return _CALLS_RUNNING[0] > 0


# shorter than this is not compile time worth a mark (a torch.compile() call once Dynamo is
# imported returns in microseconds)
MIN_COMPILE_NS = 1_000_000
MAX_CALLS = 32  # torch.compile call sites kept (a script compiling in a loop calls it each time)


class CompileWatch:
    """Args:
        now_ns: the run clock.
        on_detect: called once, the first time the program uses torch.compile.
        on_compiled: called after each compilation with its duration in ns.
    """

    def __init__(self, now_ns: Callable[[], int], on_detect: Callable[[], None],
                 on_compiled: Callable[[int], None]):
        self.now_ns = now_ns
        self.on_detect = on_detect
        self.on_compiled = on_compiled
        self.detected = False
        self.intervals: list[list[int]] = []  # [start_ns, end_ns] of every compilation
        self._t0: int | None = None
        self._original: Any = None
        self._wrapper: Any = None
        self._callbacks = False
        self.dynamo = DynamoMetrics(now_ns)  # Dynamo's record of each compilation
        self.calls: list[list[str]] = []  # [site, what it compiled] of each torch.compile call

    def install(self) -> None:
        import torch

        original = torch.compile
        watch = self

        @functools.wraps(original)
        def compile(*args: Any, **kwargs: Any) -> Any:
            # from here: the first call's detection imports Dynamo for its callbacks
            t0 = watch.now_ns()
            _CALLS_RUNNING[0] += 1
            try:
                watch._detect()
                target = args[0] if args else kwargs.get("model")
                if target is not None:  # (None: the decorator form, which calls back with it)
                    watch._called(target)
                return original(*args, **kwargs)
            except BaseException as exc:
                drop_own_frames(exc)  # the script's `except` prints what it prints plain
                raise
            finally:
                _CALLS_RUNNING[0] -= 1
                # the first call imports Dynamo and Inductor (seconds): compile time too
                watch._compiled(t0, watch.now_ns(), "torch.compile()")

        self._original, self._wrapper = original, compile
        torch.compile = hidden_from_warnings(compile)
        if "torch._dynamo" in sys.modules:  # imported before dsprof started: may compile
            self._register_callbacks()

    def uninstall(self) -> None:
        import torch

        if self._original is not None and torch.compile is self._wrapper:
            torch.compile = self._original
        self._original = self._wrapper = None
        if self._callbacks:
            from torch._dynamo.callback import callback_handler

            for registered, remove in ((self._start, callback_handler.remove_start_callback),
                                       (self._end, callback_handler.remove_end_callback)):
                try:
                    remove(registered)
                except ValueError:  # already cleared (torch._dynamo.reset() clears them)
                    pass
            self._callbacks = False

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"used": self.detected, "intervals": self.intervals,
                               "total_ns": sum(e - s for s, e in self.intervals)}
        if self.detected:
            self._harvest()
            rec.update(compiles=self.dynamo.rows, compiles_dropped=self.dynamo.dropped,
                       recompile_limit=recompile_limit(), calls=self.calls)
        return rec

    def _called(self, target: Any) -> None:
        """Keep where the script called torch.compile and on what: Dynamo's record names a
        compiled module's code as torch's own wrapper (``external_utils.py``'s ``inner``)."""
        if len(self.calls) >= MAX_CALLS:
            return
        try:
            frame = sys._getframe(2)
            while frame is not None and internal_file(frame.f_code.co_filename):
                frame = frame.f_back
            site = (f"{shown_path(frame.f_code.co_filename)}:{frame.f_lineno}"
                    if frame is not None else "?")
            name = getattr(target, "__qualname__", None)
            call = [site, name if isinstance(name, str) else type(target).__name__]
            if call not in self.calls:
                self.calls.append(call)
        except Exception as caught:  # a frame or name that cannot be read: no site
            if raised_in_signal_handler(caught):
                raise  # the script's own signal handler's: it is the script's
            logger.debug("compile watch: the torch.compile call's site not read", exc_info=True)

    def _harvest(self) -> None:
        try:
            self.dynamo.harvest()
        except Exception as caught:  # a torch whose records differ: the times stay
            if raised_in_signal_handler(caught):
                raise  # the script's own signal handler's: it is the script's
            logger.debug("compile watch: Dynamo's compilation records not read", exc_info=True)

    def _detect(self) -> None:
        if self.detected:
            return
        self.detected = True
        self._register_callbacks()
        try:
            _skip_codes()
        except Exception as exc:  # a torch without this API: breaks stay
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            logger.warning("could not hide dsprof's wrappers from torch.compile: %s: %s",
                           type(exc).__name__, exc)
        logger.info("torch.compile in use: dsprof's module and saved-tensor hooks are off for "
                    "this run, so the compiled graphs are the ones the script gets without it")
        try:
            self.on_detect()
        except Exception as exc:  # a collector must not fail the script
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            logger.error("turning module hooks off for torch.compile failed: %s: %s",
                         type(exc).__name__, exc)

    def _register_callbacks(self) -> None:
        if self._callbacks:
            return
        from torch._dynamo.callback import callback_handler

        callback_handler.register_start_callback(self._start)
        callback_handler.register_end_callback(self._end)
        self._callbacks = True

    def _start(self, args: Any) -> None:
        self._detect()
        self._t0 = self.now_ns()

    def _end(self, args: Any) -> None:
        if self._t0 is not None:
            t0, self._t0 = self._t0, None
            self._compiled(t0, self.now_ns(), str(getattr(args, "compile_id", "?")))
        # the records of the compilations before this one (Dynamo writes a record after its
        # end callbacks ran), read before its list of 64 drops them
        self._harvest()

    def _compiled(self, start: int, end: int, what: str) -> None:
        if end - start < MIN_COMPILE_NS:
            return
        self.intervals.append([start, end])
        logger.debug("compile %s: %.0f ms", what, (end - start) / 1e6)
        try:
            self.on_compiled(end - start)
        except Exception as caught:
            if raised_in_signal_handler(caught):
                raise  # the script's own signal handler's: it is the script's
            logger.debug("compile watch: listener failed", exc_info=True)


def compile_meta(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """meta.json ``compile`` from a session record's: whether torch.compile ran, how many
    compilations and how long they took in all, Dynamo's ``recompile_limit`` and the script's
    torch.compile calls (``[site, what]``) (None when it did not run)."""
    if not rec or not rec.get("used"):
        return None
    out = {"used": True, "compilations": len(rec.get("intervals") or []),
           "total_s": round((rec.get("total_ns") or 0) / 1e9, 3), "module_hooks": "off"}
    limit = rec.get("recompile_limit")
    if isinstance(limit, int) and not isinstance(limit, bool):
        out["recompile_limit"] = limit
    calls = rec.get("calls")
    if isinstance(calls, list):  # [site, what] of the script's torch.compile calls
        out["calls"] = [[str(c[0]), str(c[1])] for c in calls[:MAX_CALLS]
                        if isinstance(c, list) and len(c) == 2]
    if rec.get("compiles_dropped"):
        out["compiles_dropped"] = rec["compiles_dropped"]
    return out
