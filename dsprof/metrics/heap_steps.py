"""Which steps show the program's own heap: the page-fault counts that prices read
(``steps.step_faults``, ``steps.optimizer_faults``).

A step faults pages in when glibc gave the heap's top back to the kernel at the end of the last
one and this step grows it again; how often that happens depends on what else the heap holds.
A profiler window changes that: once its buffers are freed (the trace_write step), the heap
keeps large free chunks inside, and the steps after it reuse them. fusion_mlp under dsprof
faulted 1,500-3,000 pages in steps 2-5 and 0 in nearly every step after its window, where the
plain script faults 925-2,272 a step (4 Dec; helper measurement with mallinfo2 and strace).
So the steady steps before the first window, which the profiler has not touched, stand for the
program; the steady steps after it are used only where there are none before.
"""

from __future__ import annotations

from dsprof.run import Run


def program_heap_rows(run: Run, columns: str, not_null: str, rank: int = 0) -> list[tuple]:
    """``columns`` (SQL) of ``rank``'s steps after the first that no profiler window held and
    dsprof did not disturb, with ``not_null`` set: those before the first profiled or warm-up
    step when there are any, else all of them."""
    rows = run.sql(f"""
        WITH first_window AS (
            SELECT min(step) AS s FROM steps
            WHERE rank = {int(rank)} AND (profiled OR disturbed_by IN ('warmup', 'window')))
        SELECT step < coalesce((SELECT s FROM first_window), 9223372036854775807), {columns}
        FROM steps
        WHERE rank = {int(rank)} AND step > 0 AND NOT profiled AND disturbed_by IS NULL
          AND {not_null} IS NOT NULL
        ORDER BY step""")
    before = [tuple(r[1:]) for r in rows if r[0]]
    return before or [tuple(r[1:]) for r in rows]
