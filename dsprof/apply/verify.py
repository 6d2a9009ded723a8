"""``dsprof verify RUN ID``: rerun RUN's own command with the finding applied, then set the
measured step time and peak memory against the prediction.

Which steps are measured: the same in both runs, and only steps that ran at full speed: not
step 0 (setup) or step 1 (where ``DS_COMPILE`` compiles and every first call pays its
one-time costs), not the steps of a profiler window or its warm-up (the profiler slows ops
down), and not the step after a window (the trace is written then). The median of what is left
is the step time. Findings give their savings in full-speed seconds (the profiler's per-op cost
taken out, see ``analyzers.fullspeed``), so predicted = baseline - the applied savings.

Each arm's spread is its robust standard deviation (1.4826 x MAD, ``analyzers.noise``). The
difference of the two medians has a standard error of about
``1.2533 x sqrt(sd_a^2 / n_a + sd_b^2 / n_b)``; a change under two of those is "no measurable
change", whatever the ratio of the medians says.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsprof.errors import ConfigError, RunDirError
from dsprof.rundir import RunDir, new_run_path


def measured_steps(run_path: Path) -> list[tuple[int, int]]:
    """(step, dur_ns) of the full-speed steps of rank 0 (see ``analyzers.fullspeed``)."""
    from dsprof.analyzers.fullspeed import full_speed_steps
    from dsprof.run import load

    with load(run_path) as run:
        return full_speed_steps(run)


def step_time_s(*run_paths: Path) -> tuple[float | None, int]:
    """Median full-speed step time over the runs given (pooled), and the number of steps."""
    steps = [d for p in run_paths for _, d in measured_steps(p)]
    if not steps:
        return None, 0
    return statistics.median(steps) / 1e9, len(steps)


def step_spread_s(*run_paths: Path) -> float | None:
    """Robust standard deviation of the pooled full-speed step times (None under 2 steps)."""
    from dsprof.analyzers.noise import series_noise

    noise = series_noise([d for p in run_paths for _, d in measured_steps(p)])
    return None if noise is None else noise.sd_s


def peak_bytes(run_path: Path) -> int | None:
    from dsprof.analyzers.registry import Context
    from dsprof.run import load

    with load(run_path) as run:
        return Context(run).peak_bytes


@dataclass
class Verification:
    baseline: Path
    applied: Path
    findings: list[dict[str, Any]]
    baseline_step_s: float | None
    predicted_step_s: float | None
    measured_step_s: float | None
    steps_used: tuple[int, int]
    baseline_peak: int | None
    predicted_peak: int | None
    measured_peak: int | None
    baseline_spread_s: float | None = None
    measured_spread_s: float | None = None

    @property
    def band_s(self) -> float | None:
        """The smallest change of the median these two arms can tell from none."""
        n_a, n_b = self.steps_used
        if self.baseline_spread_s is None or self.measured_spread_s is None or not n_a or \
                not n_b:
            return None
        se = 1.2533 * (self.baseline_spread_s ** 2 / n_a
                       + self.measured_spread_s ** 2 / n_b) ** 0.5
        return 2 * se

    @property
    def measurable(self) -> bool | None:
        """False when the measured change is inside the arms' spread ("no measurable
        change"); None when it cannot be said."""
        band = self.band_s
        if band is None or self.baseline_step_s is None or self.measured_step_s is None:
            return None
        return abs(self.baseline_step_s - self.measured_step_s) > band

    @property
    def error(self) -> float | None:
        """(measured change - predicted change) / predicted change of the step time."""
        if None in (self.baseline_step_s, self.predicted_step_s, self.measured_step_s):
            return None
        predicted = self.baseline_step_s - self.predicted_step_s  # type: ignore[operator]
        measured = self.baseline_step_s - self.measured_step_s  # type: ignore[operator]
        return None if predicted <= 0 else (measured - predicted) / predicted

    def to_json(self) -> dict[str, Any]:
        return {"baseline": str(self.baseline), "applied": str(self.applied),
                "findings": self.findings, "baseline_step_s": self.baseline_step_s,
                "predicted_step_s": self.predicted_step_s,
                "measured_step_s": self.measured_step_s,
                "steps_used": list(self.steps_used), "baseline_peak_bytes": self.baseline_peak,
                "predicted_peak_bytes": self.predicted_peak,
                "measured_peak_bytes": self.measured_peak, "error": self.error,
                "baseline_spread_s": self.baseline_spread_s,
                "measured_spread_s": self.measured_spread_s, "band_s": self.band_s,
                "measurable": self.measurable}


def compare(applied: Path | list[Path],
            measured_baseline: Path | list[Path] | None = None) -> Verification:
    """Measured vs predicted for run(s) made with ``--apply`` (their meta names the baseline).

    Args:
        applied: the run with the fix, or several (rounds), whose full-speed steps are pooled.
        measured_baseline: fresh run(s) of the same command without the fix, to measure the
            baseline step time on (default: the baseline run itself).
    """
    applied_runs = applied if isinstance(applied, list) else [applied]
    meta = RunDir(applied_runs[0]).read_meta()
    plan = meta.get("applied")
    if not plan:
        raise RunDirError(f"{applied_runs[0]} was not run with --apply; nothing to verify")
    if measured_baseline is None:
        base_runs = [Path(plan["baseline"])]
    elif isinstance(measured_baseline, list):
        base_runs = measured_baseline
    else:
        base_runs = [measured_baseline]
    base_s, n_base = step_time_s(*base_runs)
    new_s, n_new = step_time_s(*applied_runs)
    predicted = None if base_s is None else max(0.0, base_s - plan["predicted_saving_s"])
    base_peak = peak_bytes(base_runs[0])
    return Verification(
        base_runs[0], applied_runs[-1], plan["findings"], base_s, predicted, new_s,
        (n_base, n_new), base_peak,
        None if base_peak is None else base_peak - plan["predicted_saving_bytes"],
        peak_bytes(applied_runs[-1]), step_spread_s(*base_runs), step_spread_s(*applied_runs))


def rerun_command(baseline: Path, ids: list[str] | None,
                  out: Path) -> tuple[list[str], Path, dict[str, str]]:
    """The ``dsprof run`` that repeats the baseline's command, with ``--apply ids`` if given."""
    meta = RunDir(baseline).read_meta()
    target = meta.get("target") or {}
    if meta.get("source") != "run" or not target.get("argv"):
        raise RunDirError(f"{baseline} was not recorded by `dsprof run` (an import?); "
                          "there is no command to rerun")
    settings = meta.get("settings") or {}
    cmd = [sys.executable, "-m", "dsprof", "run", "-o", str(out)]
    if ids:
        cmd += ["--apply", ",".join(ids), "--baseline", str(baseline.resolve())]
    for name in ("wait", "warmup", "active", "repeat"):
        if settings.get(name) is not None:
            cmd += [f"--{name}", str(settings[name])]
    if target.get("kind") == "module":
        cmd += ["-m", target["name"], *target["argv"][1:]]
    else:
        cmd += target["argv"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DS_", "DSPROF_"))}
    env.update({k: v for k, v in (meta.get("env") or {}).items()
                if k.startswith(("DS_", "DSPROF_")) and k != "DSPROF_OUTPUT"})
    return cmd, Path(meta.get("cwd") or "."), env


def _rerun(baseline: Path, ids: list[str] | None, out: Path, quiet: bool) -> None:
    cmd, cwd, env = rerun_command(baseline, ids, out)
    if quiet:
        cmd.insert(cmd.index("run") + 1, "-q")
    proc = subprocess.run(cmd, cwd=cwd, env=env, check=False)
    if proc.returncode != 0 or not (out / "meta.json").is_file():
        raise RunDirError(f"the rerun exited with status {proc.returncode}; see {out}")


def verify(baseline: Path, ids: list[str], out: Path | None = None, quiet: bool = True,
           fresh_baseline: bool = False, rounds: int = 1) -> Verification:
    """Rerun ``baseline``'s command with ``ids`` applied into ``out`` and compare.

    Args:
        fresh_baseline: also rerun the command without the fix (into ``<out>-baseline``) and
            measure the baseline step time there: on a shared or busy machine the original
            run's speed may not be today's.
        rounds: run the pair (fresh baseline, then with the fix) this many times, alternating,
            and pool each side's full-speed steps (``<out>-r<k>``); implies a fresh baseline.

    Raises:
        RunDirError: the baseline cannot be rerun, or the rerun failed.
        ConfigError: an id is unknown or has no knob (checked before anything runs).
    """
    from dsprof.apply.plan import plan

    if rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    baseline = baseline.resolve()
    plan(ids, baseline, baseline.parent)  # fail before running anything
    out = out or new_run_path(baseline.parent, f"{baseline.name}-verify")
    if rounds == 1:
        fresh = out.with_name(out.name + "-baseline") if fresh_baseline else None
        if fresh is not None:
            _rerun(baseline, None, fresh, quiet)
        _rerun(baseline, ids, out, quiet)
        return compare(out, fresh)
    bases, applied = [], []
    for k in range(rounds):
        bases.append(out.with_name(f"{out.name}-r{k}-baseline"))
        applied.append(out.with_name(f"{out.name}-r{k}"))
        _rerun(baseline, None, bases[-1], quiet)
        _rerun(baseline, ids, applied[-1], quiet)
    return compare(applied, bases)
