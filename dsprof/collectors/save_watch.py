"""``torch.save`` calls per step: the checkpoints the script, or its framework's callback
(Lightning's ``ModelCheckpoint``, the HF Trainer's optimizer state), saves on the training
thread.

A step that saved a checkpoint is slower by the time the save took; when such steps recur every
N steps, step_outliers names them as the script's periodic checkpointing (no saving: the script
wants its checkpoints), not as outliers to remove. The stride is read from the saves themselves,
which are recorded in every step, the profiler's window and the steps dsprof disturbed included:
a run of 40 steps that saves every 10 has 2 slow saving steps among the steady ones (the first
falls in the window's trace write), too few for a stride of outliers.

``torch.save`` (and ``torch.serialization.save``, the same function) is wrapped: the original
runs unchanged; the wrapper adds two clock reads and, for a step's first save, one walk up the
stack for the caller's line. Saves under torch.compile (none in practice) are not counted.

``torch.distributed.checkpoint``'s ``save`` and ``async_save`` (DCP) are wrapped too, from the
first boundary after the script imported it (dsprof does not import it for the script): a DCP
save calls ``torch.save`` only for its non-tensor items, so that inner call alone read as the
checkpoint, "torch.save at train.py:29: 4.88 of the 22 ms over the median", fix
``torch.save(...)``. The outermost save of a thread is the one counted (``steps.save_call``
names it), on the thread that marked the last boundary only (``async_save`` runs ``save`` on
its writer thread, after the step); a call bound before the wrap (``from
torch.distributed.checkpoint import save``) is not seen.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from typing import Any

from dsprof.collectors.dataloader import user_site
from dsprof.frames import drop_own_frames, hidden_from_warnings, raised_in_signal_handler


class SaveWatch:
    """The time ``torch.save`` took in the step in progress, and the line that called it."""

    def __init__(self) -> None:
        self.save_ns: list[int | None] = []
        self.save_site: list[str | None] = []
        self.save_call: list[str | None] = []
        self._ns = 0
        self._site: str | None = None
        self._call: str | None = None
        self._original: Any = None
        self._wrapper: Any = None
        self._depth = threading.local()  # saves in progress on this thread (DCP's torch.save)
        # the thread that marked the last boundary: a save on another one (async_save's
        # writer thread runs dcp.save there) does not hold the step up
        self._stepping: int | None = None
        self._dcp: list[tuple[Any, str, Any, Any]] = []  # (module, attribute, original, wrapper)

    def install(self) -> None:
        import torch
        import torch.serialization

        original = self._original = torch.serialization.save
        self._wrapper = save = self._wrap(original, "torch.save")
        torch.save = save
        torch.serialization.save = save
        self._wrap_dcp()

    def _wrap(self, original: Any, call: str) -> Any:
        """``original`` timed; only a thread's outermost save counts (DCP calls torch.save)."""
        import torch

        from dsprof.collectors.compile_watch import invisible_to_dynamo

        is_compiling = torch.compiler.is_compiling
        watch, depth = self, self._depth

        @functools.wraps(original)
        def save(*args: Any, **kwargs: Any) -> Any:
            if is_compiling() or getattr(depth, "busy", False):
                return original(*args, **kwargs)
            depth.busy = True
            t0 = time.perf_counter_ns()
            try:
                return original(*args, **kwargs)
            except BaseException as exc:
                drop_own_frames(exc)  # the script's `except` prints what it prints plain
                raise
            finally:
                depth.busy = False
                watch._saved(time.perf_counter_ns() - t0, call)

        invisible_to_dynamo(hidden_from_warnings(save))
        return save

    def _wrap_dcp(self) -> None:
        """DCP's save and async_save, once the script has imported the package."""
        if self._dcp or self._original is None:
            return
        dcp = sys.modules.get("torch.distributed.checkpoint")
        saver = sys.modules.get("torch.distributed.checkpoint.state_dict_saver")
        if dcp is None or saver is None:
            return
        for name in ("save", "async_save"):
            original = getattr(saver, name, None)
            if original is None:
                continue
            wrapper = self._wrap(original, f"torch.distributed.checkpoint.{name}")
            for module in (dcp, saver):
                if getattr(module, name, None) is original:
                    setattr(module, name, wrapper)
                    self._dcp.append((module, name, original, wrapper))

    def uninstall(self) -> None:
        if self._original is None:
            return
        import torch
        import torch.serialization

        # only our own wrapper is taken back: a wrapper the script put over it stays
        for owner in (torch, torch.serialization):
            if getattr(owner, "save", None) is self._wrapper:
                setattr(owner, "save", self._original)  # noqa: B010 - torch.save is not typed as assignable
        for module, name, original, wrapper in self._dcp:
            if getattr(module, name, None) is wrapper:
                setattr(module, name, original)
        self._original = self._wrapper = None
        self._dcp = []

    def _saved(self, ns: int, call: str) -> None:
        if self._stepping is not None and threading.get_ident() != self._stepping:
            return
        self._ns += ns
        if self._site is None:
            self._call = call
            try:
                self._site = user_site(3)[0]
            except Exception as caught:  # never fail the script's save
                if raised_in_signal_handler(caught):
                    raise  # the script's own signal handler's: it is the script's
                self._site = "?"

    def take(self, sample: bool) -> None:
        """A boundary: the step's save time and site appended (null when the boundary was
        found after the fact: which step saved is not known), the counters reset."""
        self.save_ns.append(self._ns if sample else None)
        self.save_site.append(self._site if sample else None)
        self.save_call.append(self._call if sample else None)
        self._ns, self._site, self._call = 0, None, None
        self._stepping = threading.get_ident()
        self._wrap_dcp()

    def record(self) -> dict[str, Any]:
        return {"save_ns": self.save_ns, "save_site": self.save_site,
                "save_call": self.save_call}
