"""Warm-up among the outliers: the first steady steps, slow, after which the run settles.

A warm-up is paid once: lazy initialisation, the allocator's and caches' warm-up, autotuning,
and TorchScript's profiling executor, which runs a scripted or traced graph as profiled at
its first call and optimizes it at its second (``torch.jit.script``: a 48 ms step 2 against
a 1.4 ms median). A longer run amortizes it; no change removes it. When the warm-up is all
the outliers, the verdict is ``steps.warmup``; when other outliers follow later in the run,
the warm-up is set aside (named in the explanation) and the verdict is on the others alone,
so they cannot borrow its time (a 1.5 ms "saving" a step, 52 %, was mostly a TorchScript
model's step 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dsprof.ingest.disturbed import FIRST_STEADY_STEP

Row = tuple[Any, ...]  # a steps row as step_outliers reads it: (step, start, end, dur, ...)


def warmup_prefix(slow: list[Row], rows: list[Row], min_steps: int) -> int:
    """How many steps of warm-up ``slow`` is: k when the outliers are exactly the first k
    steady steps (``rows`` in step order) and at least ``min_steps`` normal steps follow them,
    else 0. Slow first steps that the run never returns to are one-time work, not outliers
    a change could remove."""
    k = len(slow)
    if [r[0] for r in slow] != [r[0] for r in rows[:k]] or len(rows) - k < min_steps:
        return 0
    return k


def leading_warmup(slow: list[Row], rows: list[Row], min_steps: int,
                   on_stride: Callable[[list[int]], bool]) -> list[Row]:
    """The outliers that are the first steady steps, when other outliers come later: set
    aside as warm-up. None when every outlier is (:func:`warmup_prefix` decides), when the
    steady steps do not start at the program's first full-speed step (an imported trace's
    ProfilerStep#5 comes after steps it did not record), when fewer than ``min_steps``
    steady steps follow them, or when ``on_stride`` says the outliers
    recur at a stride that includes them (an evaluation every N steps whose first one is
    among the first steps is periodic work, not warm-up)."""
    if not rows or int(rows[0][0]) > FIRST_STEADY_STEP:
        return []
    k = 0
    while k < len(slow) and k < len(rows) and slow[k][0] == rows[k][0]:
        k += 1
    if k == 0 or k == len(slow) or len(rows) - k < min_steps:
        return []
    if on_stride([int(r[0]) for r in slow[:k]]):
        return []
    return slow[:k]


def warmup_title(slow: list[Row], rows: list[Row], rank: int, med: float) -> str:
    k = len(slow)
    return (f"{'Step' if k == 1 else 'Steps'} {span(slow)} on rank {rank}, the "
            f"first {'full-speed step' if k == 1 else f'{k} full-speed steps'}"
            f", ran up to {max(r[3] for r in slow) / med:.1f}x the median before the "
            f"run settled at step {int(rows[k][0])}: warm-up, paid once, not a saving")


WARMUP_FIX = ("# Nothing to change in the script: the first steps pay one-time work\n"
              "# (lazy initialisation, the allocator's and caches' warm-up, autotuning,\n"
              "# TorchScript optimizing its graphs at their second call) that a longer run\n"
              "# amortizes. To time steps, leave these out.")


def set_aside_text(collected: list[Row], warm: list[Row], med: float) -> str:
    """The outliers left out of the verdict: the garbage collector's, and a warm-up."""
    out = ""
    if collected:
        steps = ", ".join(f"{r[0]} ({r[7] / 1e6:.1f} ms, generation {r[8]})"
                          for r in collected[:8])
        one = len(collected) == 1
        out += (f" Left out: {'step' if one else 'steps'} {steps}, slow because Python's "
                f"garbage collector ran in {'it' if one else 'them'} (the runtime's work).")
    if warm:
        one = len(warm) == 1
        out += (f" Left out as warm-up: {'step' if one else 'steps'} {span(warm)}, the first "
                f"full-speed {'step' if one else 'steps'} (up to "
                f"{max(r[3] for r in warm) / med:.1f}x the median), paid once (lazy "
                "initialisation, caches, TorchScript optimizing its graphs at their second "
                "call): no saving.")
    return out


def span(slow: list[Row]) -> str:
    first, last = int(slow[0][0]), int(slow[-1][0])
    if first == last:
        return str(first)
    steps = [int(r[0]) for r in slow]
    return f"{first}-{last}" if steps == list(range(first, last + 1)) else \
        ", ".join(map(str, steps[:8])) + (" ..." if len(steps) > 8 else "")
