"""Arrow results from a run's DuckDB connection that survive other code's unfinished results.

DuckDB 2 refuses ``con.sql(...)`` while an earlier ``execute()`` on the same connection has
rows left unread (an analyzer that took ``fetchone()`` of a one-row aggregate leaves its result
open), with ResourceInUseException. ``execute()`` closes such a result, so one trivial
``execute`` first makes the relation API usable again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from dsprof.run import Run


def settle(run: Run) -> None:
    """Close any result another caller left open on the run's connection."""
    run.con.execute("SELECT 1").fetchall()


def arrow(run: Run, query: str, params: Sequence[Any] | None = None) -> pa.Table:
    settle(run)
    return run.arrow(query, params)
