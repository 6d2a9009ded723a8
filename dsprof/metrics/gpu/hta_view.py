"""The ``kernels`` and ``ops`` tables as Holistic Trace Analysis sees them: whole microseconds.

HTA's parser (0.5.0, ``round_down_time_stamps``) ceils every start and floors every end to whole
microseconds when a trace has float (ns-resolution) timestamps, shortening each event by up to
2 us. On traces of many short kernels that moves HTA's idle split by several points (3 on the
V100 ResNet trace). dsprof's tables keep nanoseconds; this view applies HTA's rounding, in
integer arithmetic, so every HTA analysis can be reproduced number for number, and it is the
view to use when comparing with a report made by HTA. Rows already on whole microseconds (traces
with integer timestamps) are unchanged.
"""

from __future__ import annotations

import duckdb

from dsprof.run import Run
from dsprof.sqlsafe import parquet_files, table_name

# (an event under a microsecond that crosses no microsecond boundary gets -1 us, as in HTA)
_ROUNDED = ("* REPLACE (((start_ns + 999) // 1000) * 1000 AS start_ns, "
            "((start_ns + dur_ns) // 1000 - (start_ns + 999) // 1000) * 1000 AS dur_ns)")


def hta_rounded(run: Run) -> duckdb.DuckDBPyConnection:
    """A new connection whose ``kernels`` and ``ops`` views carry HTA's microsecond times (and
    the other tables of the run unchanged)."""
    con = duckdb.connect()
    for name in run.tables:
        cols = _ROUNDED if name in ("kernels", "ops") else "*"
        con.execute(f"CREATE VIEW {table_name(name)} AS SELECT {cols} FROM read_parquet("
                    f"{parquet_files(run.rundir, name)}, union_by_name = true)")
    return con
