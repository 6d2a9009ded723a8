"""torch.compile in the profiled program: seen early, timed, and left alone.

dsprof must profile the compiled program the user runs. Dynamo traces whatever Python runs
inside a compiled region, hooks included: a hook body it cannot trace is a graph break, and the
*presence* of global module hooks changes what it traces (``Module.__call__`` instead of
``forward``), guards on the hook dicts' lengths (a hook added or removed later is a recompile,
and eight of them fall back to eager) and makes ``OptimizedModule.__call__`` warn. Measured on
a two-block MLP compiled on CPU (tests/integration/test_steps_sources.py): 15 graph breaks and
4 graphs under dsprof before this, 0 and 1 plain.

So once the program uses torch.compile, dsprof takes every global module hook and its
saved-tensor hooks away for the rest of the run (module names and activation charges are not
recorded; inside a compiled graph no module call happens anyway) and never adds them again.
It learns this as early as it can: a wrapper of ``torch.compile`` (which ``Module.compile()``
calls too) fires before the user's first compiled call, and Dynamo's compile-start callback
catches ``torch._dynamo.optimize`` and anything else that reaches Dynamo. The same callbacks
time every compilation (Dynamo's frames and the lazy backward compile), so compile time is
reported as compile time: ``session.json`` ``compile``, and the steps it fell in.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from dsprof.log import logger


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

    def install(self) -> None:
        import torch

        original = torch.compile
        watch = self

        @functools.wraps(original)
        def compile(*args: Any, **kwargs: Any) -> Any:  # noqa: A001 - torch's own name
            watch._detect()
            return original(*args, **kwargs)

        self._original, self._wrapper = original, compile
        torch.compile = compile
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
        return {"used": self.detected, "intervals": self.intervals,
                "total_ns": sum(e - s for s, e in self.intervals)}

    def _detect(self) -> None:
        if self.detected:
            return
        self.detected = True
        self._register_callbacks()
        logger.info("torch.compile in use: dsprof's module and saved-tensor hooks are off for "
                    "this run, so the compiled graphs are the ones the script gets without it")
        try:
            self.on_detect()
        except Exception as exc:  # noqa: BLE001 - a collector must not fail the script
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
        if self._t0 is None:
            return
        end = self.now_ns()
        self.intervals.append([self._t0, end])
        dur, self._t0 = end - self._t0, None
        logger.debug("compile %s: %.0f ms", getattr(args, "compile_id", "?"), dur / 1e6)
        try:
            self.on_compiled(dur)
        except Exception:  # noqa: BLE001
            logger.debug("compile watch: listener failed", exc_info=True)


def compile_meta(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """meta.json ``compile`` from a session record's: whether torch.compile ran, how many
    compilations and how long they took in all (None when it did not run)."""
    if not rec or not rec.get("used"):
        return None
    return {"used": True, "compilations": len(rec.get("intervals") or []),
            "total_s": round((rec.get("total_ns") or 0) / 1e9, 3), "module_hooks": "off"}
