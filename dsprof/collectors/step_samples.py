"""What is read of the process at each step boundary, one value per step: the device's peak
allocated bytes since the last boundary (the peak is reset there), the process's resident
memory, and the data loaders' wait, batch size and batches fetched in the step
(collectors/dataloader.py). A boundary recorded after the fact gets nulls: nothing was read
at that moment. The step collector decides where boundaries fall; this reads at them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psutil

from dsprof.collectors.device import Device
from dsprof.log import STEP_LINE, logger

TakeData = Callable[[], tuple[int | None, int | None, int | None]]


class BoundarySamples:
    """The per-step columns read at boundaries (steps table: device_peak_bytes, rss_bytes,
    data_wait_ns, batch_size, loader_batches)."""

    def __init__(self, device: Device, take_data: TakeData | None = None):
        self.device = device
        self.take_data = take_data
        self._process = psutil.Process()
        self.device_peak_bytes: list[int | None] = []
        self.rss_bytes: list[int | None] = []
        self.data_wait_ns: list[int | None] = []
        self.batch_size: list[int | None] = []
        self.loader_batches: list[int | None] = []

    def start(self) -> None:
        """The first step's peak counts from here."""
        self.device.reset_peak()

    def take(self) -> tuple[int | None, int, int | None]:
        """Read at a boundary: (device peak, RSS, data wait), also appended."""
        peak = self.device.peak_allocated()
        self.device_peak_bytes.append(peak)
        rss = self._process.memory_info().rss
        self.rss_bytes.append(rss)
        if peak is not None:
            self.device.reset_peak()
        wait, batch, batches = (self.take_data() if self.take_data is not None
                                else (None, None, None))
        self.data_wait_ns.append(wait)
        self.batch_size.append(batch)
        self.loader_batches.append(batches)
        return peak, rss, wait

    def skip(self) -> None:
        """A boundary recorded after the fact: nothing was read then."""
        for column in self._columns().values():
            column.append(None)

    def record(self) -> dict[str, Any]:
        return dict(self._columns())

    def _columns(self) -> dict[str, list[int | None]]:
        return {"rss_bytes": self.rss_bytes, "device_peak_bytes": self.device_peak_bytes,
                "data_wait_ns": self.data_wait_ns, "batch_size": self.batch_size,
                "loader_batches": self.loader_batches}


def log_step_line(step: int, dur_ns: int, source: str,
                  taken: tuple[int | None, int, int | None] | None = None) -> None:
    """The step's line in the run's dsprof.log (on the terminal only at DEBUG or on request:
    ``STEP_LINE``). ``taken``: what :meth:`BoundarySamples.take` read at the boundary; None for
    a boundary recorded after the fact (a decision replays up to 64 ``backward()`` ends at once,
    and one terminal line each was a burst of 63 on pytorch/examples' word_language_model)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    if taken is None:
        logger.info("step %d: %.1f ms (%s)", step, dur_ns / 1e6, source, extra=STEP_LINE)
        return
    peak, rss, wait = taken
    mem = f"peak {peak / 2**20:.1f} MiB" if peak is not None else f"rss {rss / 2**20:.1f} MiB"
    data = f", data wait {wait / 1e6:.1f} ms" if wait is not None else ""
    logger.info("step %d: %.1f ms, %s%s", step, dur_ns / 1e6, mem, data, extra=STEP_LINE)
