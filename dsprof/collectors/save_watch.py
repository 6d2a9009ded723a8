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
"""

from __future__ import annotations

import functools
import time
from typing import Any

from dsprof.collectors.dataloader import user_site


class SaveWatch:
    """The time ``torch.save`` took in the step in progress, and the line that called it."""

    def __init__(self) -> None:
        self.save_ns: list[int | None] = []
        self.save_site: list[str | None] = []
        self._ns = 0
        self._site: str | None = None
        self._original: Any = None
        self._wrapper: Any = None

    def install(self) -> None:
        import torch
        import torch.serialization

        from dsprof.collectors.compile_watch import invisible_to_dynamo

        original = self._original = torch.serialization.save
        is_compiling = torch.compiler.is_compiling
        watch = self

        @functools.wraps(original)
        def save(*args: Any, **kwargs: Any) -> Any:
            if is_compiling():
                return original(*args, **kwargs)
            t0 = time.perf_counter_ns()
            try:
                return original(*args, **kwargs)
            finally:
                watch._saved(time.perf_counter_ns() - t0)

        invisible_to_dynamo(save)
        self._wrapper = save
        torch.save = save
        torch.serialization.save = save

    def uninstall(self) -> None:
        if self._original is None:
            return
        import torch
        import torch.serialization

        # only our own wrapper is taken back: a wrapper the script put over it stays
        for owner in (torch, torch.serialization):
            if getattr(owner, "save", None) is self._wrapper:
                setattr(owner, "save", self._original)  # noqa: B010 - torch.save is not typed as assignable
        self._original = self._wrapper = None

    def _saved(self, ns: int) -> None:
        self._ns += ns
        if self._site is None:
            try:
                self._site = user_site(3)[0]
            except Exception:  # noqa: BLE001 - never fail the script's save
                self._site = "?"

    def take(self, sample: bool) -> None:
        """A boundary: the step's save time and site appended (null when the boundary was
        found after the fact: which step saved is not known), the counters reset."""
        self.save_ns.append(self._ns if sample else None)
        self.save_site.append(self._site if sample else None)
        self._ns, self._site = 0, None

    def record(self) -> dict[str, Any]:
        return {"save_ns": self.save_ns, "save_site": self.save_site}
