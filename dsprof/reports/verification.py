"""Predicted vs measured for runs made with ``dsprof run --apply``: what ``dsprof verify`` and
the dashboard's Findings page show. Read-only: it loads the runs it is given and the baseline
their manifest names, and never ingests or writes one.

Step time and peak are those of ``run.facts`` (full-speed steps; several runs of one side are
pooled: the median of all their counted steps), so ``dsprof diff`` of the same pair shows the
same measured saving. Findings give their savings in full-speed seconds (the profiler's per-op
cost taken out, see ``metrics.fullspeed``), so predicted = baseline - the applied savings.

Each arm's spread is its robust standard deviation (1.4826 x MAD, ``metrics.noise``). The
difference of the two medians has a standard error of about
``1.2533 x sqrt(sd_a^2 / n_a + sd_b^2 / n_b)``: the step band. It sees only the step-to-step
spread, not how a run's median moves with the machine's load from one run to the next, so it
decides nothing alone: the verdict is the paired rounds' (``reports.paired_verdict``, the same
function benchmarks/advice.py's judge uses), which needs two rounds or more.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsprof.errors import RunDirError
from dsprof.facts import Facts
from dsprof.metrics.noise import series_noise
from dsprof.reports.paired_verdict import UPDATE_KIND, WORK_KINDS, Judgement, judge, read_arm
from dsprof.run import load


def _facts(run_path: Path) -> Facts:
    with load(run_path, ingest=False) as run:
        return run.facts


def step_time_s(*facts: Facts) -> tuple[float | None, int]:
    """Median step time over the counted steps of the runs given (pooled), and their number."""
    steps = [d for f in facts for d in f.step.durations_ns]
    if not steps:
        return None, 0
    return statistics.median(steps) / 1e9, len(steps)


def step_spread_s(*facts: Facts) -> float | None:
    """Robust standard deviation of the pooled counted step times (None under 2 steps)."""
    noise = series_noise([d for f in facts for d in f.step.durations_ns])
    return None if noise is None else noise.sd_s


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
    not_applied: list[str] = field(default_factory=list)
    """Where a knob left the program as it was (a module path no module matched, a
    ``DS_LIBRARY_OP`` module that kept its own forward, with the reason): the rerun measured
    less than the pasted fix."""
    judgement: Judgement | None = None
    """The paired rounds' verdict (``reports.paired_verdict.judge``): a 95 % interval of the
    change only with ``judgement.rounds >= 2``. None when an arm has under two steady steps."""

    @property
    def band_s(self) -> float | None:
        """The smallest change of the median these two arms can tell from none."""
        n_a, n_b = self.steps_used
        if self.baseline_spread_s is None or self.measured_spread_s is None or not n_a \
                or not n_b:
            return None
        return 2 * 1.2533 * math.sqrt(self.baseline_spread_s ** 2 / n_a
                                      + self.measured_spread_s ** 2 / n_b)

    @property
    def measurable(self) -> bool | None:
        """False when the measured change is inside the arms' spread ("no measurable
        change"); None when it cannot be said."""
        band, saved = self.band_s, self.measured_saving_s
        if band is None or saved is None:
            return None
        return abs(saved) > band

    @property
    def measured_saving_s(self) -> float | None:
        if self.baseline_step_s is None or self.measured_step_s is None:
            return None
        return self.baseline_step_s - self.measured_step_s

    @property
    def error(self) -> float | None:
        """(measured change - predicted change) / predicted change of the step time."""
        if self.baseline_step_s is None or self.predicted_step_s is None \
                or self.measured_saving_s is None:
            return None
        predicted = self.baseline_step_s - self.predicted_step_s
        return None if predicted <= 0 else (self.measured_saving_s - predicted) / predicted

    def to_json(self) -> dict[str, Any]:
        return {"baseline": str(self.baseline), "applied": str(self.applied),
                "findings": self.findings, "baseline_step_s": self.baseline_step_s,
                "predicted_step_s": self.predicted_step_s,
                "measured_step_s": self.measured_step_s,
                "measured_saving_s": self.measured_saving_s,
                "steps_used": list(self.steps_used), "baseline_peak_bytes": self.baseline_peak,
                "predicted_peak_bytes": self.predicted_peak,
                "measured_peak_bytes": self.measured_peak, "error": self.error,
                "baseline_spread_s": self.baseline_spread_s,
                "measured_spread_s": self.measured_spread_s, "band_s": self.band_s,
                "measurable": self.measurable,
                "paired": None if self.judgement is None else self.judgement.to_json()}


def compare(applied: Path | list[Path],
            measured_baseline: Path | list[Path] | None = None) -> Verification:
    """Measured vs predicted for run(s) made with ``--apply`` (their manifest names the
    baseline).

    Args:
        applied: the run with the fix, or several (rounds), whose counted steps are pooled.
        measured_baseline: fresh run(s) of the same command without the fix, to measure the
            baseline step time on (default: the baseline run itself).

    Raises:
        RunDirError: the run was not made with ``--apply``, or a run cannot be read.
    """
    applied_runs = applied if isinstance(applied, list) else [applied]
    applied_facts = []
    plan = None
    not_applied: list[str] = []
    for i, path in enumerate(applied_runs):
        with load(path, ingest=False) as run:
            applied_facts.append(run.facts)
            if i == 0:
                plan = run.manifest.applied
                not_applied = knobs_not_applied(run.meta)
    if plan is None:
        raise RunDirError(f"{applied_runs[0]} was not run with --apply; nothing to verify")
    if measured_baseline is None:
        base_runs = [Path(plan.baseline)]
    elif isinstance(measured_baseline, list):
        base_runs = measured_baseline
    else:
        base_runs = [measured_baseline]
    base_facts = [_facts(p) for p in base_runs]
    records = [dict(f) for f in plan.findings]
    base_s, n_base = step_time_s(*base_facts)
    new_s, n_new = step_time_s(*applied_facts)
    predicted = None if base_s is None else max(0.0, base_s - plan.predicted_saving_s)
    base_peak = base_facts[0].peak_bytes
    judgement = paired_judgement(records, plan.predicted_saving_s, base_s, base_runs,
                                 applied_runs)
    return Verification(
        base_runs[0], applied_runs[-1], records, base_s, predicted,
        new_s, (n_base, n_new), base_peak,
        # a fix whose finding models no memory change predicts none: "+0.0 MiB" was claimed
        # for turning bf16 autocast off, measured +7.5 MiB (its fp32 activations)
        None if base_peak is None or not any(f.get("saving_bytes") for f in plan.findings)
        else base_peak - plan.predicted_saving_bytes,
        applied_facts[-1].peak_bytes, step_spread_s(*base_facts),
        step_spread_s(*applied_facts), not_applied, judgement)


def paired_judgement(records: list[dict[str, Any]], predicted_saving_s: float,
                     base_s: float | None, base_runs: list[Path],
                     applied_runs: list[Path]) -> Judgement | None:
    """The paired verdict on the applied findings together, run ``k`` of one arm paired with
    run ``k`` of the other. Judged on the training thread's CPU time only when every finding
    removes work from it (one clock for the change), on the CPU time inside optimizer.step()
    only when every finding is the fused optimizer's (``paired_verdict.choose_metric``); the saving is taken as priced in that
    thread's CPU time only when every finding says so. Always a ranked verdict: verify checks
    whatever prediction it was asked to, ranked or not."""
    if len(base_runs) != len(applied_runs):  # the original run against one rerun: one round
        base_runs, applied_runs = base_runs[:1], applied_runs[:1]
    kinds = [str(r.get("kind") or "") for r in records]
    kind = kinds[0] if kinds and all(k.startswith(WORK_KINDS) for k in kinds) else "mixed"
    if len(set(kinds)) > 1 and kind == UPDATE_KIND:  # other fixes change more than the update
        kind = next(k for k in kinds if k != UPDATE_KIND)
    clocks = {r.get("saving_clock") for r in records}
    clock = clocks.pop() if len(clocks) == 1 else None
    predicted = 0.0 if base_s is None else min(base_s, max(0.0, predicted_saving_s))
    return judge(kind, True, predicted, read_arm(base_runs), read_arm(applied_runs),
                 saving_clock=clock)


def knobs_not_applied(meta: dict[str, Any]) -> list[str]:
    """``<knob>: <where> (<why>)`` for each place a knob's report says it left as it was."""
    out = []
    for name, rep in sorted((meta.get("knobs") or {}).items()):
        unmatched = rep.get("unmatched") if isinstance(rep, dict) else None
        if isinstance(unmatched, list):
            out += [f"{name}: no module matched {pattern}" for pattern in unmatched]
        kept = rep.get("kept") if isinstance(rep, dict) else None
        if isinstance(kept, dict):
            out += [f"{name}: {where} kept its own forward ({why})"
                    for where, why in sorted(kept.items())]
    return out
