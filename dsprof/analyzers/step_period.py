"""The stride of periodic slow steps (evaluation or checkpointing every N steps) among a run's
outliers, for :mod:`dsprof.analyzers.step_outliers`."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from typing import Any

from dsprof.analyzers.registry import Context


def period_of(steps: list[int], first: int, last: int,
            present: set[int] | None = None,
            excess: dict[int, float] | None = None) -> tuple[int, int] | None:
    """(N, residue) when the outliers include every N-th step of the run (at least 3 of
    them, 80 % of that residue's steps between ``first`` and ``last`` among the ``present``
    ones (the steady steps: a window's steps are not judged), and 60 % of the outliers, or,
    given each outlier's ``excess`` over the median, 60 % of their excess time), else None.
    Noise outliers in between do not hide the pattern.

    The excess share is for a loop whose periodic work is long and whose noise is many small
    waits: a PPO loop's rollout (hundreds of forwards and environment steps, ~60x the median)
    every 16 updates was 5 of 22 outliers but 87 % of their excess, and the rollouts read as
    "noise on this machine, not the program".

    The candidate periods are the gaps between any two outliers, not only neighbouring ones:
    on a loaded machine a noise outlier lands between two periodic ones (steps 3, 11, 14, 15
    with 7 in the profiler's window: neighbours differ by 8, 3 and 1, and the stride 4 is
    only the gap 11 -> 15), and the evaluation read as "off the CPU". A stride needs three
    hits, so gaps over half the span are not tried."""
    if len(steps) < 3:
        return None
    slow = set(steps)
    span = max(steps) - min(steps)
    best: tuple[int, int, int] | None = None
    total = sum(excess.get(s, 0.0) for s in steps) if excess else 0.0
    for p in sorted({b - a for a, b in combinations(steps, 2) if 1 < b - a <= span // 2}):
        hits = Counter(s % p for s in steps)
        residues = {hits.most_common(1)[0][0]}
        if excess:  # the residue with the most outliers, and the one with the most excess
            weight: dict[int, float] = {}
            for s in steps:
                weight[s % p] = weight.get(s % p, 0.0) + excess.get(s, 0.0)
            residues.add(max(weight, key=weight.__getitem__))
        for residue in sorted(residues):
            count = hits[residue]
            expected = [k for k in range(first, last + 1)
                        if k % p == residue and (present is None or k in present)]
            covered = sum(k in slow for k in expected)
            carried = excess is not None and total > 0 and sum(
                excess.get(s, 0.0) for s in steps if s % p == residue) >= 0.6 * total
            if (count >= 3 and covered >= 0.8 * len(expected)
                    and (count >= 0.6 * len(steps) or carried)
                    and (best is None or count > best[2])):
                best = (p, residue, count)
    return (best[0], best[1]) if best else None


def sites_only_in(ctx: Context, rank: int, slow: list[int], normal: list[int]) -> list[str]:
    """Source lines (from the host-sync collector, which sees every step) that ran in most of
    the slow steps and in none of the normal ones: where the periodic work is."""
    if not slow or not ctx.nonempty("host_syncs"):
        return []
    rows = ctx.run.sql("""
        SELECT site, count(DISTINCT step) FILTER (WHERE step IN (SELECT unnest(?::BIGINT[]))),
               count(DISTINCT step) FILTER (WHERE step IN (SELECT unnest(?::BIGINT[])))
        FROM host_syncs WHERE rank = ? AND site IS NOT NULL GROUP BY site ORDER BY site""",
                       [slow, normal, rank])
    return [site for site, in_slow, in_normal in rows
            if in_slow >= 0.5 * len(slow) and in_normal == 0][:3]


def periodic_work(periodic: list[tuple[Any, ...]], more_work: set[int],
                   sites: list[str]) -> bool:
    """Whether steps at a stride are the script's periodic work: they ran a code path the
    others did not (``sites``), or at least half of them did more work (the thread's CPU time
    or their profiled ops grew), or there is no CPU time to tell (an import). That work wins
    over "off the CPU": on a loaded machine a step that computes more also waits longer for a
    core, so an evaluation step's wait grows with its work. Steps at a stride that only waited
    are left to the off-CPU rule."""
    if sites or any(r[4] is None for r in periodic):
        return True
    return sum(int(r[0]) in more_work for r in periodic) >= 0.5 * len(periodic)


def on_stride(steps: list[int], slow: list[tuple[Any, ...]], rows: list[tuple[Any, ...]],
              med: float) -> bool:
    """Whether the outliers ``slow`` of the steady steps ``rows`` recur at a stride that
    includes ``steps`` (as the periodic verdict finds strides)."""
    period = period_of([int(r[0]) for r in slow], int(rows[0][0]), int(rows[-1][0]),
                       present={int(r[0]) for r in rows},
                       excess={int(r[0]): r[3] - med for r in slow})
    return period is not None and any(s % period[0] == period[1] for s in steps)
