"""Full-speed steps, and what the profiler adds to each op it records.

A ``dsprof run`` times every step, but records ops only in its windows, where each op costs
extra (the profiler's bookkeeping, shapes, allocations). Steps 0 and 1 (setup; first calls,
where ``DS_COMPILE`` compiles), each window's steps and warm-up, and the step after a window
(the trace is written then) are not at full speed; the rest are.

Savings that are counted in ops (dispatch overhead, launches) would be overstated if measured
on profiled ops alone: :func:`profiler_cost_per_op` estimates what recording adds to each op.
Analyzers subtract it per op removed, so findings are in full-speed seconds; ``dsprof verify``
measures full-speed steps.
"""

from __future__ import annotations

from dsprof.facts import FIRST_FULL_SPEED_STEP, FULL_SPEED
from dsprof.run import Run

__all__ = ["FIRST_FULL_SPEED_STEP", "full_speed_steps", "profiler_cost_per_op"]


def full_speed_steps(run: Run, rank: int = 0) -> list[tuple[int, int]]:
    """(step, dur_ns) of the full-speed steps of ``rank`` (the rule of ``run.facts``; empty
    when the run has none, e.g. an import)."""
    st = run.facts.step
    if st.rule != FULL_SPEED:
        return []
    return [(s, d) for r, s, d in st.counted if r == rank]


# Ops that do no work (metadata only): what they take under the profiler is its cost per op.
_NO_WORK = ("aten::resolve_conj", "aten::as_strided", "aten::alias", "detach")


def profiler_cost_per_op(run: Run) -> float:
    """Seconds the profiler adds per recorded op: the median duration of recorded ops that do
    no work (``resolve_conj``, ``as_strided``, ...), which run in well under a microsecond
    unrecorded. 0 for imports (no full-speed steps to compare with) and without such ops.

    The step-time difference between profiled and full-speed steps would say the same on a
    quiet machine, but on a shared one it moves with the load from step to step.
    """
    if not run.manifest.is_run or not run.has("ops"):
        return 0.0
    names = ", ".join(f"'{n}'" for n in _NO_WORK)
    # ops are only recorded in profiler windows; the steps table (absent from a damaged run
    # directory) only narrows them to the window's own steps
    in_window = ("AND step IN (SELECT step FROM steps WHERE profiled)"
                 if run.has("steps") else "")
    row = run.sql(f"""SELECT median(dur_ns), count(*) FROM ops WHERE name IN ({names})
                      {in_window}""")[0]
    return float(row[0]) / 1e9 if row[1] else 0.0
