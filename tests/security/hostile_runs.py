"""Small hand-built run directories with hostile contents (no trace needed)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dsprof.rundir import RunDir
from dsprof.schema import table


def make_run(path: Path, tables: dict[str, pa.Table]) -> Path:
    """A run directory holding ``tables`` (one part per table, rank 0)."""
    rundir = RunDir.create(path)
    rundir.write_meta({"ingested": True, "status": "finished", "world_size": 1,
                       "argv": ["train.py"], "exit_status": 0})
    for name, data in tables.items():
        rundir.table_dir(name).mkdir(parents=True, exist_ok=True)
        pq.write_table(data, rundir.table_dir(name) / "rank0.parquet")
    return path


def comms_rows(n: int = 3) -> pa.Table:
    cols = table("comms").column_names
    data = {c: [None] * n for c in cols}
    data.update(rank=[0] * n, step=list(range(n)), collective=["all_reduce"] * n,
                start_ns=[1_000_000 * (i + 1) for i in range(n)], dur_ns=[500_000] * n,
                in_bytes=[4096] * n, out_bytes=[4096] * n, source=["gloo"] * n)
    return table("comms").build(data)


def steps_rows(n: int = 3) -> pa.Table:
    cols = table("steps").column_names
    data = {c: [None] * n for c in cols}
    data.update(rank=[0] * n, step=list(range(n)),
                start_ns=[1_000_000 * i for i in range(n)],
                end_ns=[1_000_000 * (i + 1) for i in range(n)],
                dur_ns=[1_000_000] * n, profiled=[True] * n)
    return table("steps").build(data)


def with_column(data: pa.Table, name: str, values: list) -> pa.Table:
    return data.append_column(name, pa.array(values))
