"""The stride of periodic slow steps (evaluation or checkpointing every N steps) among a run's
outliers, for :mod:`dsprof.analyzers.step_outliers`."""

from __future__ import annotations

from collections import Counter
from itertools import combinations


def period_of(steps: list[int], first: int, last: int,
            present: set[int] | None = None) -> tuple[int, int] | None:
    """(N, residue) when the outliers include every N-th step of the run (at least 3 of
    them, 80 % of that residue's steps between ``first`` and ``last`` among the ``present``
    ones (the steady steps: a window's steps are not judged), and 60 % of the outliers), else
    None. Noise outliers in between do not hide the pattern.

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
    for p in sorted({b - a for a, b in combinations(steps, 2) if 1 < b - a <= span // 2}):
        hits = Counter(s % p for s in steps)
        residue, count = hits.most_common(1)[0]
        expected = [k for k in range(first, last + 1)
                    if k % p == residue and (present is None or k in present)]
        covered = sum(k in slow for k in expected)
        if (count >= 3 and covered >= 0.8 * len(expected) and count >= 0.6 * len(steps)
                and (best is None or count > best[1])):
            best = (p, residue, count)
    return (best[0], best[1]) if best else None
