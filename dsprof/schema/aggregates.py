"""Per-rank aggregates, written at ingest with the rank's tables (dsprof/ingest/aggregates.py):
what ``dsprof summary`` reads instead of rescanning ops and kernels. A run without them (one
ingested by an older dsprof) gets the same rows computed on first use (Run.aggregate)."""

from __future__ import annotations

from dsprof.schema.spec import BOOL, I32, I64, STR, Column, Table

RANK_TOTALS = Table(
    "rank_totals",
    "One row per ingested rank: counts of its big tables and the ProfilerStep names it has. Its "
    "presence marks a run whose aggregates were written at ingest.",
    (
        Column("rank", I32, "process rank"),
        Column("ops", I64, "rows of ops"),
        Column("ops_in_steps", I64, "rows of ops with a step"),
        Column("profiler_step_names", I64, "distinct ProfilerStep#N op names"),
        Column("first_profiler_step", STR, "the smallest ProfilerStep#N name (text order), "
               "null without one"),
        Column("kernels", I64, "rows of kernels"),
    ),
)

KERNEL_TIME = Table(
    "kernel_time",
    "Per rank, device time by the set of kernel types running at once (HTA's kernel-type and "
    "temporal breakdowns add these up): the union of kernel intervals, split by type.",
    (
        Column("rank", I32, "process rank"),
        Column("last_step_dropped", BOOL,
               "false: every kernel; true: HTA's default convention applied to this rank "
               "(kernels launched in its last ProfilerStep, and unlinked kernels, left out)"),
        Column("types", I32, "bit set of the types running: 1 COMPUTATION (kind compute), 2 "
               "COMMUNICATION, 4 MEMORY (memcpy, memset), 8 OTHER; 0 is idle within the span "
               "from the rank's first kernel start to its last kernel end"),
        Column("ns", I64, "time with exactly these types running, ns"),
    ),
)

OP_TIME = Table(
    "op_time",
    "Per rank and cpu_op name: calls and time, inside and outside steps.",
    (
        Column("rank", I32, "process rank"),
        Column("name", STR, "op name (ops.name of cat cpu_op)"),
        Column("in_step", BOOL, "the calls have a step (ops.step not null)"),
        Column("calls", I64, "rows of ops"),
        Column("self_ns", I64, "sum of ops.self_ns, ns"),
        Column("dur_ns", I64, "sum of ops.dur_ns, ns"),
    ),
)

PHASE_TIME = Table(
    "phase_time",
    "Per rank, the wall time of its profiled steps owned by each phase: spans where a phase "
    "begins, clipped to their step, swept over all threads; an instant where several phases "
    "run goes to the first of backward, forward, optimizer, data, other.",
    (
        Column("rank", I32, "process rank"),
        Column("phase", STR, "forward | backward | optimizer | data | other"),
        Column("ns", I64, "time owned by the phase, ns"),
    ),
)
