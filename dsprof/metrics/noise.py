"""Steady steps and the run's own step-time noise: the one rule every analyzer uses.

Steady steps are those dsprof did not disturb, by the one step-time rule of
:mod:`dsprof.facts`: not step 0 or 1, not in or around a profiler window, not the step that
writes a window's trace, not a DEBUG or anomaly-check run (``steps.disturbed_by`` says which;
see :mod:`dsprof.ingest.disturbed`). An imported trace's steps were all recorded alike, so all
of them count (but a fragment ProfilerStep).

Noise is the robust spread of the steady step times of a rank: ``1.4826 x MAD`` (the standard
deviation for normal data, but a few outliers do not move it). A claim is *measurable* when a
``dsprof verify`` with as many steps per arm could tell it apart from no change: the
difference of two medians of ``n`` steps has a standard error of about
``1.2533 x sd x sqrt(2 / n)``; a change below two of those is inside the noise.

Between runs the step-to-step spread is not the whole noise: a run's median step moves with the
machine's load from one run to the next. A comparison run in rounds (a baseline run, then a
run with the fix) is judged per round (:func:`paired_change`: the mean of the rounds' changes,
with Student's t over their spread, :func:`t_975`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsprof.facts import FULL_SPEED
from dsprof.ingest.disturbed import run_disturbance
from dsprof.run import Run
from dsprof.sqlsafe import table_columns

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
    return column in table_columns(run, table)


def steady_steps(run: Run, rank: int = 0) -> list[tuple[int, int, int | None]]:
    """(step, dur_ns, cpu_ns) of ``rank``'s steady steps, in step order: the steps
    ``run.facts`` counts when its strictest rule held (full-speed steps of a ``dsprof run``;
    an import's ProfilerSteps, fragments left out). A run whose every step dsprof disturbed (a
    DEBUG trace) has none."""
    st = run.facts.step
    if run.manifest.is_run and st.rule != FULL_SPEED:
        return []
    counted = [(s, d) for r, s, d in st.counted if r == rank]
    if not counted:
        return []
    cpu = dict(run.sql("SELECT step, cpu_ns FROM steps WHERE rank = ?", [rank]))
    return [(int(s), int(d), None if cpu.get(s) is None else int(cpu[s])) for s, d in counted]


def step_noise(run: Run, rank: int = 0) -> StepNoise | None:
    """The noise of ``rank``'s steady steps, or None with fewer than five of them."""
    durs = np.array([d for _, d, _ in steady_steps(run, rank)], np.float64)
    if len(durs) < MIN_STEADY_STEPS:
        return None
    med = float(np.median(durs))
    sd = 1.4826 * float(np.median(np.abs(durs - med)))
    return StepNoise(len(durs), med / 1e9, sd / 1e9)


def series_noise(durations_ns: list[int] | list[float] | np.ndarray) -> StepNoise | None:
    """The same spread over any list of step times (one arm of a verify)."""
    durs = np.asarray(durations_ns, np.float64)
    if len(durs) < 2:
        return None
    med = float(np.median(durs))
    return StepNoise(len(durs), med / 1e9, 1.4826 * float(np.median(np.abs(durs - med))) / 1e9)


# Steps whose time says nothing about the program's speed at all (building, compiling, writing
# a trace). A profiler window's steps do count for the spread: every rank's window is recorded
# alike, and a run's collectives are only matched in its windows.
_NOT_COMPARABLE = ("setup", "first_call", "trace_write", "trace_aftermath", "capture",
                   "split_iteration", "earlier_loop", "loop_start", "later_loop")


def rank_step_spread(run: Run) -> dict[int, StepNoise]:
    """Per rank, the spread of its step times over the steps that ran the program's
    work (steady and profiled steps; not setup, first calls or a trace being written): how
    much a rank's step varies from one step to the next on this machine. Ranks with fewer than
    two such steps are left out. Imports: every step with a positive duration."""
    if not run.has("steps"):
        return {}
    skip = ""
    if has_column(run, "steps", "disturbed_by"):
        names = ", ".join(f"'{r}'" for r in _NOT_COMPARABLE)
        skip = f"AND coalesce(disturbed_by, '') NOT IN ({names})"
    by_rank: dict[int, list[int]] = {}
    for rank, dur in run.sql(f"SELECT rank, dur_ns FROM steps WHERE dur_ns > 0 {skip} "
                             "ORDER BY rank, step"):
        by_rank.setdefault(int(rank), []).append(int(dur))
    return {r: noise for r, durs in by_rank.items()
            if (noise := small_sample_noise(durs)) is not None}


def outlier_limit(durations: np.ndarray) -> float:
    """The step time past which a step is an outlier: 3 robust sd over the median, and at
    least 20 % above it (analyzers/step_outliers.py)."""
    med = float(np.median(durations))
    mad = float(np.median(np.abs(durations - med))) * 1.4826
    return max(med + 3 * mad, med * 1.2)


def small_sample_noise(durations_ns: list[int]) -> StepNoise | None:
    """The spread of a few step times: robust (1.4826 x MAD) from five on, the sample standard
    deviation below that (the MAD of three values is the smallest gap between two of them,
    which says nothing about the third)."""
    if len(durations_ns) >= MIN_STEADY_STEPS:
        return series_noise(durations_ns)
    if len(durations_ns) < 2:
        return None
    durs = np.asarray(durations_ns, np.float64)
    return StepNoise(len(durs), float(np.median(durs)) / 1e9, float(np.std(durs, ddof=1)) / 1e9)


def profiled_on_cpu_share(run: Run, rank: int = 0) -> float | None:
    """The share of ``rank``'s profiled steps' time (less their DataLoader wait) that the
    training thread spent on a CPU: near 1 for a CPU-bound step on an idle machine, far lower
    when the machine is so loaded that the thread waited for a core most of the time, and the
    op times recorded then hold that wait. None without CPU times (imports) or profiled steps."""
    if not (has_column(run, "steps", "cpu_ns") and has_column(run, "steps", "profiled")):
        return None
    wait = "coalesce(data_wait_ns, 0)" if has_column(run, "steps", "data_wait_ns") else "0"
    row = run.sql(f"""SELECT sum(cpu_ns), sum(dur_ns - {wait}) FROM steps
                      WHERE rank = ? AND profiled AND cpu_ns IS NOT NULL AND dur_ns > 0""",
                  [rank])
    cpu, busy = row[0] if row else (None, None)
    if not cpu or not busy or busy <= 0:
        return None
    return min(1.0, float(cpu) / float(busy))


def disturbance(run: Run) -> str | None:
    """Why every step of this run is disturbed (``debug_trace``, ``anomaly_check``, or the
    script's own ``autograd_anomaly`` mode at every step), or None."""
    if run.meta.get("source") != "run":
        return None
    whole = run_disturbance(run.meta.get("settings") or {}, run.meta.get("env") or {})
    steps = int(run.meta.get("steps_recorded") or 0)
    if whole is None and steps and int(run.meta.get("autograd_anomaly") or 0) >= steps:
        return "autograd_anomaly"
    return whole


# Student's t, 0.975 quantile, by degrees of freedom 1-30: the half-width of a two-sided 95 %
# interval of a mean, in standard errors, when the sd is itself estimated from df + 1 values
# (with two values it rests on one difference, and two standard errors would be far too lax).
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
          2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
          2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_975(df: int) -> float:
    """Student's t 0.975 quantile for ``df`` >= 1 degrees of freedom (tabled to 30; beyond,
    1.96 + 2.5 / df, within 0.002 of the exact value)."""
    if df < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, not {df}")
    return _T_975[df - 1] if df <= len(_T_975) else 1.96 + 2.5 / df


@dataclass(frozen=True)
class PairedChange:
    """The change of the step time between two arms run in rounds (a baseline run, then a run
    with the fix, per round, as ``dsprof verify --rounds N`` runs them): per round ``k``,
    ``d_k`` = the median steady step of baseline ``k`` - that of fix ``k``.

    A run's median step moves with the machine's load from one run to the next by as much as
    a small saving, and all steps of one run share that run's load: pooling the steps of
    several runs and taking the step-to-step spread as the noise treats them as independent
    and misses it. Pairing a baseline with the fix run next to it takes out the load both
    share; what is left between rounds is the noise of the change itself. The change is the
    mean of ``d_k`` (the interval below is the mean's; each ``d_k`` is already a difference of
    medians, so one slow step does not move it, and a round under a burst of load widens the
    interval instead of hiding), its band Student's ``t(0.975, k - 1) x sd(d_k) / sqrt(k)``:
    a two-sided 95 % interval."""

    diffs_s: tuple[float, ...]

    @property
    def rounds(self) -> int:
        return len(self.diffs_s)

    @property
    def mean_s(self) -> float:
        return sum(self.diffs_s) / len(self.diffs_s)

    @property
    def sd_s(self) -> float | None:
        """The sample standard deviation of ``d_k`` (None under two rounds)."""
        if self.rounds < 2:
            return None
        m = self.mean_s
        return math.sqrt(sum((d - m) ** 2 for d in self.diffs_s) / (self.rounds - 1))

    @property
    def band_s(self) -> float | None:
        """The half-width of the 95 % interval of the mean change (None under two rounds)."""
        sd = self.sd_s
        return None if sd is None else t_975(self.rounds - 1) * sd / math.sqrt(self.rounds)


def paired_change(baseline_runs_s: list[list[float]],
                  fixed_runs_s: list[list[float]]) -> PairedChange | None:
    """The paired change of rounds given as each arm's runs in round order (run ``k`` of one
    arm pairs with run ``k`` of the other), each run its steady step times in seconds. A round
    in which either run has no steady step is left out; None when no round is left."""
    diffs = tuple(float(np.median(b)) - float(np.median(f))
                  for b, f in zip(baseline_runs_s, fixed_runs_s, strict=True) if b and f)
    return PairedChange(diffs) if diffs else None
