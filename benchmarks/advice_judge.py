"""The verdict of benchmarks/advice.py: one prediction against two interleaved arms.

``dsprof verify --rounds N`` runs the script without the fix and with it in turn (baseline,
fix, baseline, fix ...), so both arms see the same hours of this machine's load. Each arm is
the pooled steady steps of its runs (``metrics.noise.steady_steps``: no setup, first call,
profiler window or trace write), rank 0, with the wall time and the training thread's CPU time
of every step.

Which time the verdict uses, and why:

- a fix that removes work from the training thread (fusion, precision, Tensor Cores): its
  **CPU time**. On a shared machine a step's wall time also holds the time the thread waited
  for a core, which swings with the other users' load and which no fix changes (fusion_mlp's
  hand GELU measured 2.5 ms in one sitting and 28.5 ms in another, in wall time). The
  prediction, a share of the step, is applied to the baseline's CPU time.
- a fix that removes a wait (the DataLoader, a host sync) or any other: **wall time**, since the
  thread's CPU time does not see a wait.

The noise band of the measured change is the run's own noise model (``metrics.noise``): each
arm's robust sd (1.4826 x MAD), and two standard errors of the difference of two medians,
``2 x 1.2533 x sqrt(sd_b^2 / n_b + sd_f^2 / n_f)``. Verdicts:

- ``within 25 %``: the measured change is within 25 % of the predicted one;
- ``inside the noise``: neither the measured nor the predicted change can be told from zero by
  these arms (the claim was too small for this machine to check);
- ``OFF +x %``: further than 25 % from the prediction, and the difference is real (the
  measured change is beyond the band, or the predicted one was and was not seen);
- ``SLOWER`` (added): the fixed arm is slower than the baseline by more than the band.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from dsprof.metrics.noise import _MEDIAN_SE, series_noise

WITHIN = 0.25
# Findings that remove work from the training thread: judged on its CPU time.
WORK_KINDS = ("fusion.", "precision.", "tensor_core.")
WHY_CPU = ("removes work from the training thread; wall time also holds the thread's waits "
           "for a core on this shared machine")
WHY_WALL = "removes a wait, which the thread's CPU time does not see"
WHY_WALL_NO_CPU = "no per-step CPU time in both arms"


@dataclass(frozen=True)
class Arm:
    """One side of the comparison: per-step times in seconds, pooled over its runs."""

    wall: list[float]
    cpu: list[float]

    def series(self, metric: str) -> list[float]:
        return self.cpu if metric == "cpu" else self.wall


@dataclass(frozen=True)
class Judgement:
    metric: str  # "wall" or "cpu": the time the verdict is on
    why: str
    baseline_s: float
    fixed_s: float
    predicted_saving_s: float  # in the metric's time
    measured_saving_s: float
    sd_s: tuple[float, float]  # baseline, fixed
    n: tuple[int, int]
    band_s: float
    verdict: str

    @property
    def error(self) -> float | None:
        p = self.predicted_saving_s
        return None if p <= 0 else (self.measured_saving_s - p) / p

    @property
    def slower(self) -> bool:
        return -self.measured_saving_s > self.band_s


def read_arm(runs: list[Path], rank: int = 0) -> Arm:
    """The steady steps of ``rank`` in ``runs``, pooled (CPU times where recorded)."""
    from dsprof.metrics.noise import steady_steps
    from dsprof.run import load

    wall: list[float] = []
    cpu: list[float] = []
    for path in runs:
        with load(path, ingest=False) as run:
            for _step, dur, cpu_ns in steady_steps(run, rank):
                wall.append(dur / 1e9)
                if cpu_ns is not None:
                    cpu.append(cpu_ns / 1e9)
    return Arm(wall, cpu)


def choose_metric(kind: str, base: Arm, fixed: Arm) -> tuple[str, str]:
    if not kind.startswith(WORK_KINDS):
        return "wall", WHY_WALL
    if len(base.cpu) < 2 or len(fixed.cpu) < 2:
        return "wall", WHY_WALL_NO_CPU
    return "cpu", WHY_CPU


def band_s(sd_base: float, n_base: int, sd_fixed: float, n_fixed: int) -> float:
    """Two standard errors of the difference of the two arms' medians (metrics.noise's rule)."""
    return 2 * _MEDIAN_SE * (sd_base ** 2 / n_base + sd_fixed ** 2 / n_fixed) ** 0.5


def judge(kind: str, ranked: bool, predicted_saving_wall_s: float, base: Arm,
          fixed: Arm) -> Judgement | None:
    """The verdict on one finding; None when an arm has fewer than two steady steps."""
    if len(base.wall) < 2 or len(fixed.wall) < 2:
        return None
    metric, why = choose_metric(kind, base, fixed)
    b, f = base.series(metric), fixed.series(metric)
    nb, nf = series_noise([x * 1e9 for x in b]), series_noise([x * 1e9 for x in f])
    assert nb is not None and nf is not None
    b_med, f_med = statistics.median(b), statistics.median(f)
    predicted = predicted_saving_wall_s
    if metric == "cpu":  # the same share of the step, of its CPU time
        wall_med = statistics.median(base.wall)
        predicted = predicted_saving_wall_s * b_med / wall_med if wall_med > 0 else 0.0
    measured = b_med - f_med
    band = band_s(nb.sd_s, nb.n, nf.sd_s, nf.n)
    err = None if predicted <= 0 else (measured - predicted) / predicted
    if not ranked:
        verdict = "outside the ranked list"
    elif err is not None and abs(err) <= WITHIN:
        verdict = "within 25 %"
    elif abs(measured) <= band and predicted <= band:
        verdict = "inside the noise"
    else:
        verdict = f"OFF {err:+.0%}" if err is not None else "OFF (no prediction)"
    if -measured > band:
        verdict += ", SLOWER"
    return Judgement(metric, why, b_med, f_med, predicted, measured, (nb.sd_s, nf.sd_s),
                     (nb.n, nf.n), band, verdict)
