"""Steady steps and the run's own step-time noise: the one rule every analyzer uses.

Steady steps are those dsprof did not disturb (``steps.disturbed`` is null: not step 0 or 1,
not in or around a profiler window, not the step that writes a window's trace, not a DEBUG or
anomaly-check run; see :mod:`dsprof.ingest.disturbed`). Runs ingested before that column
existed fall back to :func:`dsprof.analyzers.fullspeed.full_speed_steps`. An imported trace's
steps were all recorded alike, so all of them count.

Noise is the robust spread of the steady step times of a rank: ``1.4826 x MAD`` (the standard
deviation for normal data, but a few outliers do not move it). A claim is *measurable* when a
``dsprof verify`` with as many steps per arm could tell it apart from no change: the
difference of two medians of ``n`` steps has a standard error of about
``1.2533 x sd x sqrt(2 / n)``; a change below two of those is inside the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsprof.ingest.disturbed import run_disturbance
from dsprof.run import Run

MIN_STEADY_STEPS = 5
# The standard error of a median is about 1.2533 x sd / sqrt(n) (normal data).
_MEDIAN_SE = 1.2533


@dataclass(frozen=True)
class StepNoise:
    """Args:
        n: steady steps the spread was measured on.
        median_s: their median time, seconds.
        sd_s: their robust standard deviation (1.4826 x MAD), seconds.
    """

    n: int
    median_s: float
    sd_s: float

    @property
    def rel(self) -> float:
        """The spread as a share of the median step."""
        return self.sd_s / self.median_s if self.median_s > 0 else 0.0

    def band_s(self, n: int | None = None) -> float:
        """The smallest change per step a comparison of two arms of ``n`` steps each (default:
        this run's steady steps) can tell from none: two standard errors of the difference of
        their medians."""
        n = max(n or self.n, 1)
        return 2 * _MEDIAN_SE * self.sd_s * math.sqrt(2 / n)

    def inside(self, saving_s: float, n: int | None = None) -> bool:
        return saving_s < self.band_s(n)

    def to_json(self) -> dict[str, Any]:
        return {"steady_steps": self.n, "median_ms": round(self.median_s * 1e3, 4),
                "sd_ms": round(self.sd_s * 1e3, 4), "band_ms": round(self.band_s() * 1e3, 4)}


def has_column(run: Run, table: str, column: str) -> bool:
    if not run.has(table):
        return False
    return any(r[0] == column for r in run.sql(f"DESCRIBE {table}"))


def steady_steps(run: Run, rank: int = 0) -> list[tuple[int, int, int | None]]:
    """(step, dur_ns, cpu_ns) of ``rank``'s steady steps, in step order."""
    if not run.has("steps"):
        return []
    if run.meta.get("source") != "run":
        rows = run.sql("SELECT step, dur_ns, cpu_ns FROM steps WHERE rank = ? AND dur_ns > 0 "
                       "ORDER BY step", [rank])
        return [(int(s), int(d), None if c is None else int(c)) for s, d, c in rows]
    if has_column(run, "steps", "disturbed"):
        rows = run.sql("SELECT step, dur_ns, cpu_ns FROM steps WHERE rank = ? AND dur_ns > 0 "
                       "AND disturbed IS NULL ORDER BY step", [rank])
        return [(int(s), int(d), None if c is None else int(c)) for s, d, c in rows]
    if run_disturbance(run.meta.get("settings") or {}, run.meta.get("env") or {}):
        return []
    from dsprof.analyzers.fullspeed import full_speed_steps

    cpu = dict(run.sql("SELECT step, cpu_ns FROM steps WHERE rank = ?", [rank]))
    return [(s, d, cpu.get(s)) for s, d in full_speed_steps(run, rank)]


def step_noise(run: Run, rank: int = 0) -> StepNoise | None:
    """The noise of ``rank``'s steady steps, or None with fewer than five of them."""
    durs = np.array([d for _, d, _ in steady_steps(run, rank)], np.float64)
    if len(durs) < MIN_STEADY_STEPS:
        return None
    med = float(np.median(durs))
    sd = 1.4826 * float(np.median(np.abs(durs - med)))
    return StepNoise(len(durs), med / 1e9, sd / 1e9)


def series_noise(durations_ns: list[int] | np.ndarray) -> StepNoise | None:
    """The same spread over any list of step times (one arm of a verify)."""
    durs = np.asarray(durations_ns, np.float64)
    if len(durs) < 2:
        return None
    med = float(np.median(durs))
    return StepNoise(len(durs), med / 1e9, 1.4826 * float(np.median(np.abs(durs - med))) / 1e9)


def disturbance(run: Run) -> str | None:
    """Why every step of this run is disturbed (``debug_trace``, ``anomaly_check``), or None."""
    if run.meta.get("source") != "run":
        return None
    return run_disturbance(run.meta.get("settings") or {}, run.meta.get("env") or {})
