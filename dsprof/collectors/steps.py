"""Step boundaries for the whole run, without code changes.

A global optimizer step post-hook marks the end of each training step. The first optimizer
that steps leads: only its steps are boundaries, so a GAN's two optimizers or a model with a
separate optimizer per parameter group still give one boundary per iteration. ``dsprof.step()``
marks boundaries by hand (inference, custom loops); once it is called the optimizer hook stops
counting, so the two never double-count.

Per boundary this costs one clock read, a list append, an RSS read, the DataLoader wait of the
step (collectors/dataloader.py) and on an accelerator the allocator's peak counter: cheap
enough for every step of the run.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import psutil

from dsprof.collectors.device import Device
from dsprof.log import STEP_LINE, logger


class StepCollector:
    """Records every step boundary and notifies listeners (the timeline collector).

    Args:
        device: the rank's device (for per-step peak memory).
        on_boundary: called with the number of the step that just ended.
    """

    def __init__(self, device: Device, on_boundary: Callable[[int], None],
                 take_data: Callable[[], tuple[int | None, int | None]] | None = None):
        self.device = device
        self.on_boundary = on_boundary
        self.take_data = take_data
        self.clock_offset_ns = time.time_ns() - time.perf_counter_ns()
        self.start_ns = self.now_ns()
        self.boundaries_ns: list[int] = []
        self.rss_bytes: list[int | None] = []
        self.device_peak_bytes: list[int | None] = []
        self.cpu_ns: list[int] = []
        self.data_wait_ns: list[int | None] = []
        self.batch_size: list[int | None] = []
        self._cpu_start = time.thread_time_ns()
        self.source: str | None = None
        self._leader: weakref.ref[Any] | None = None
        self._hook: Any = None
        self._process = psutil.Process()
        # GradScaler, per step number: (loss scale after update, optimizer step skipped)
        self.scaler: dict[int, tuple[float, bool]] = {}
        self._stepped_since_update = False

    def now_ns(self) -> int:
        """Epoch ns from the monotonic clock: the clock Kineto traces use, without NTP jumps."""
        return time.perf_counter_ns() + self.clock_offset_ns

    @property
    def steps_done(self) -> int:
        return len(self.boundaries_ns)

    def install(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._hook = register_optimizer_step_post_hook(self._optimizer_stepped)
        self.device.reset_peak()
        logger.debug("step collector: optimizer step hook installed")

    def uninstall(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _optimizer_stepped(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.source == "manual":
            return
        if self._leader is None or self._leader() is None:
            self._leader = weakref.ref(optimizer)
            logger.debug("step collector: %s marks the step boundaries", type(optimizer).__name__)
        elif self._leader() is not optimizer:
            return
        self.source = "optimizer"
        self._stepped_since_update = True
        self.boundary()

    def manual_step(self) -> None:
        if self.source != "manual":
            if self.source == "optimizer":
                logger.info("dsprof.step() called: step boundaries now come from it, "
                            "not from the optimizer")
            self.source = "manual"
        self.boundary()

    def scaler_update(self, scale: float, skipped: bool) -> None:
        """A ``GradScaler.update()``: record the scale for its step.

        With optimizer-marked steps the update follows the boundary of the step it belongs
        to, unless the scaler skipped ``optimizer.step()``: then no hook fired, and the update
        marks the boundary itself. With ``dsprof.step()`` it belongs to the step in progress.
        """
        if self.source == "manual":
            step = len(self.boundaries_ns)
        else:
            if skipped and not self._stepped_since_update:
                self.source = "optimizer"
                self.boundary()
            step = len(self.boundaries_ns) - 1
        self._stepped_since_update = False
        if step >= 0:
            self.scaler[step] = (scale, skipped)
            if skipped:
                logger.info("step %d: GradScaler skipped the optimizer step (inf/NaN "
                            "gradients); loss scale now %g", step, scale)

    def boundary(self) -> None:
        end = self.now_ns()
        cpu = time.thread_time_ns()
        self.cpu_ns.append(cpu - self._cpu_start)
        self._cpu_start = cpu
        step = len(self.boundaries_ns)
        start = self.boundaries_ns[-1] if step else self.start_ns
        self.boundaries_ns.append(end)
        peak = self.device.peak_allocated()
        self.device_peak_bytes.append(peak)
        rss = self._process.memory_info().rss
        self.rss_bytes.append(rss)
        if peak is not None:
            self.device.reset_peak()
        wait, batch = self.take_data() if self.take_data is not None else (None, None)
        self.data_wait_ns.append(wait)
        self.batch_size.append(batch)
        if logger.isEnabledFor(logging.INFO):
            mem = f"peak {peak / 2**20:.1f} MiB" if peak is not None else f"rss {rss / 2**20:.1f} MiB"
            data = f", data wait {wait / 1e6:.1f} ms" if wait is not None else ""
            logger.info("step %d: %.1f ms, %s%s", step, (end - start) / 1e6, mem, data,
                        extra=STEP_LINE)
        self.on_boundary(step)

    def record(self) -> dict[str, Any]:
        n = len(self.boundaries_ns)
        return {
            "source": self.source or "none",
            "start_ns": self.start_ns,
            "boundaries_ns": self.boundaries_ns,
            "rss_bytes": self.rss_bytes,
            "device_peak_bytes": self.device_peak_bytes,
            "cpu_ns": self.cpu_ns,
            "data_wait_ns": self.data_wait_ns,
            "batch_size": self.batch_size,
            "loss_scale": [self.scaler[i][0] if i in self.scaler else None for i in range(n)],
            "skipped": [self.scaler[i][1] if i in self.scaler else None for i in range(n)],
        }
