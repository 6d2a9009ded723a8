"""The one place where the run directory's tables are defined.

Every table dsprof writes is declared in this package as a :class:`Table`: its name, its
columns (name, Arrow type, one line of meaning) and the order they are written in. Ingest builds Arrow tables
through :func:`Table.build`, so a column that is missing, misspelt or of the wrong type fails at
write time, not in an analyzer three stages later. ``docs/format.md`` documents the same columns
and a test checks the two agree.

``SCHEMA_VERSION`` (defined in ``dsprof/schema_version.py``) is stored in ``meta.json``. Bump
it whenever a column changes meaning or type, or a table is added; a reader refuses a run written with a newer version than its own.

The tables are split by what they record (``timeline``, ``memory``, ``process``) and the
per-rank ``aggregates`` ingest derives from them; :data:`TABLES` here is the one registry of
them all, which readers, ingest and the ``docs/format.md`` test go through.
"""

from __future__ import annotations

from dsprof.schema.aggregates import KERNEL_TIME, OP_TIME, PHASE_TIME, RANK_TOTALS
from dsprof.schema.memory import ALLOCATOR, GRAD_HOLDERS, MEMORY, MEMORY_SERIES, MODULES, STACKS
from dsprof.schema.process import ANOMALIES, COMPILES, DATALOADERS, DEVICE_SAMPLES
from dsprof.schema.spec import BOOL, Column, Table
from dsprof.schema.timeline import COMMS, CUPTI_KERNELS, HOST_SYNCS, KERNELS, OPS, STEPS
from dsprof.schema_version import SCHEMA_VERSION  # stored in meta.json; readers import it here

__all__ = [
    "ALLOCATOR", "ANOMALIES", "COMMS", "COMPILES", "CUPTI_KERNELS", "DATALOADERS", "DEVICE_SAMPLES",
    "GRAD_HOLDERS", "HOST_SYNCS", "KERNELS", "KERNEL_TIME", "MEMORY", "MEMORY_SERIES", "MODULES",
    "OPS", "OP_TIME", "PHASE_TIME", "RANK_TOTALS", "SCHEMA_VERSION", "STACKS", "STEPS", "TABLES",
    "VIEW_COLUMNS", "Column", "Table", "table",
]

TABLES: dict[str, Table] = {t.name: t for t in (
    STEPS, OPS, KERNELS, MEMORY, DATALOADERS, HOST_SYNCS, DEVICE_SAMPLES, CUPTI_KERNELS, COMMS,
    MEMORY_SERIES, MODULES, STACKS, ALLOCATOR, GRAD_HOLDERS, ANOMALIES, COMPILES,
    RANK_TOTALS, KERNEL_TIME, OP_TIME, PHASE_TIME)}


def table(name: str) -> Table:
    return TABLES[name]


# Columns the run layer adds to a table's view (dsprof/run.py), derived from the run's
# manifest rather than stored in Parquet: {table: ((name, Arrow type, meaning), ...)}.
VIEW_COLUMNS: dict[str, tuple[Column, ...]] = {
    "steps": (
        Column("disturbed", BOOL,
               "dsprof itself slowed the step: a profiler window's step, its warm-up, or the "
               "step after it (the trace is written then), or any step of a DEBUG-trace or "
               "anomaly-check run (disturbed_by says which); false for imports. Never "
               "evidence of the script's speed (see dsprof/facts.py)"),
    ),
}

