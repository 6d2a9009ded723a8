"""The verdict of benchmarks/advice.py: one prediction against two arms run in rounds.

The rule lives in ``dsprof/reports/paired_verdict.py`` (its docstring says which time is
judged, the paired interval and the verdicts), because ``dsprof verify --rounds N`` prints the
same verdict: one implementation, so the judge and verify cannot disagree. This module keeps
the judge's names and adds only what the benchmark's adaptive rounds need.
"""

from __future__ import annotations

from dsprof.reports.paired_verdict import (
    WHY_CPU,
    WHY_UPDATE,
    WHY_WALL,
    WHY_WALL_NO_CPU,
    WITHIN,
    WORK_KINDS,
    Arm,
    Judgement,
    band_s,
    choose_metric,
    decision,
    judge,
    percent,
    read_arm,
)

__all__ = ["WHY_CPU", "WHY_UPDATE", "WHY_WALL", "WHY_WALL_NO_CPU", "WITHIN", "WORK_KINDS", "Arm",
           "Judgement", "band_s", "choose_metric", "decision", "judge", "needs_more_rounds",
           "percent", "read_arm"]


# With two rounds the paired band rests on one degree of freedom: two rounds that happen to
# agree give a narrow band that says little, and stopping there took the luck as a decision
# (hf_t5's fused AdamW: decided "OFF -63 %" after 2 rounds in one quiet sitting, -3 % in the
# next). A ranked verdict is decided from the third round on.
MIN_DECIDING_ROUNDS = 3


def needs_more_rounds(j: Judgement | None, rounds_run: int, max_rounds: int) -> bool:
    """Whether advice.py should run another round: a ranked verdict the interval does not
    decide yet, or one decided before MIN_DECIDING_ROUNDS, with rounds left."""
    if j is None or rounds_run >= max_rounds:
        return False
    ranked = j.verdict != "outside the ranked list"
    return not j.decided or (ranked and rounds_run < MIN_DECIDING_ROUNDS)
