"""GradScaler monitoring without code changes: the loss scale and skipped steps, per step.

``torch.amp.GradScaler.update`` (which ``torch.cuda.amp.GradScaler`` and the CPU scaler
inherit) is wrapped for the session. Before the real update runs, the scaler still holds each
optimizer's ``found_inf`` flags: any of them set means ``scaler.step()`` skipped
``optimizer.step()``. After it, the new scale is read (one host read of a scalar per step; on
a GPU ``scaler.step()`` has already synchronized on ``found_inf``). The listener gets
``(scale, skipped)``; the step collector turns it into the ``loss_scale`` and ``skipped``
columns of ``steps`` and marks the boundary of a skipped step, which the optimizer hook never
sees.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dsprof.frames import drop_own_frames, hidden_from_warnings, raised_in_signal_handler
from dsprof.log import logger


def _skipped(scaler: Any) -> bool:
    flags = []
    for state in getattr(scaler, "_per_optimizer_states", {}).values():
        flags.extend(state.get("found_inf_per_device", {}).values())
    return bool(sum(float(f) for f in flags)) if flags else False


class GradScalerMonitor:
    """Args:
        on_update: called with ``(scale, skipped)`` after each ``GradScaler.update()``.
    """

    def __init__(self, on_update: Callable[[float, bool], None]):
        self.on_update = on_update
        self._original: Any = None
        self._failed = False

    def install(self) -> None:
        from torch.amp import GradScaler

        if self._original is not None:
            return
        original = GradScaler.update
        monitor = self

        @functools.wraps(original)
        def update(scaler: Any, new_scale: Any = None) -> None:
            skipped = None
            if not monitor._failed and getattr(scaler, "_enabled", False):
                try:
                    skipped = _skipped(scaler)
                except Exception as exc:  # never fail the user's step
                    if raised_in_signal_handler(exc):
                        raise  # the script's own signal handler's: it is the script's
                    monitor._fail(exc)
            try:
                original(scaler, new_scale)
            except BaseException as exc:
                drop_own_frames(exc)  # the script's `except` prints what it prints plain
                raise
            if skipped is None or monitor._failed or getattr(scaler, "_scale", None) is None:
                return
            try:
                monitor.on_update(float(scaler._scale), skipped)
            except Exception as exc:
                if raised_in_signal_handler(exc):
                    raise  # the script's own signal handler's: it is the script's
                monitor._fail(exc)

        GradScaler.update = hidden_from_warnings(update)
        self._original = original
        logger.debug("grad scaler monitor: GradScaler.update wrapped")

    def uninstall(self) -> None:
        if self._original is None:
            return
        from torch.amp import GradScaler

        GradScaler.update = self._original
        self._original = None

    def _fail(self, exc: BaseException) -> None:
        self._failed = True
        logger.error("grad scaler monitor failed and is off for the rest of the run: %s: %s",
                     type(exc).__name__, exc)
