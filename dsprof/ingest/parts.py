"""Writing a rank's tables: ``tables/<name>/rank<R>.parquet``, staged then renamed into place.

A part is first written to a temporary name; only when every table of the rank is written are
they renamed, so a failure leaves the previous ingest's tables as they were.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dsprof.rundir import RunDir, remove_quietly
from dsprof.schema import Table

# (temporary file or None when the table is empty, target, rows)
Staged = tuple[Path | None, Path, int]


def build_table(table: Table, parts: list[dict[str, Any]]) -> pa.Table | None:
    """The parts as one Arrow table, None when they hold no rows."""
    built = [table.build(p) for p in parts if len(next(iter(p.values()), [])) > 0]
    if not built or sum(t.num_rows for t in built) == 0:
        return None
    return pa.concat_tables(built) if len(built) > 1 else built[0]


def write_staged(run: RunDir, table: Table, rank: int, data: pa.Table | None) -> Staged:
    """Write ``data`` to a temporary name next to its target (nothing when it is None)."""
    out_dir = run.table_dir(table.name)
    target = out_dir / f"rank{rank}.parquet"
    if data is None:
        return None, target, 0
    rows = data.num_rows
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".rank{rank}.parquet.tmp-{os.getpid()}"
    # Dictionary-encode the text columns only: for integer columns that are mostly distinct
    # (ids, times, correlations) a dictionary costs more to build than it saves, and the file
    # comes out smaller without it.
    text = [f.name for f in data.schema if pa.types.is_string(f.type)]
    try:
        pq.write_table(data, tmp, compression="lz4", use_dictionary=text)
    except BaseException:
        remove_quietly(tmp)  # a full disk leaves no partial part behind
        raise
    return tmp, target, rows


def commit_part(staged: Staged) -> int:
    """Rename a staged part into place (or remove the stale part of an empty table)."""
    tmp, target, rows = staged
    if tmp is None:
        if target.exists():
            target.unlink()
    else:
        os.replace(tmp, target)
    return rows
