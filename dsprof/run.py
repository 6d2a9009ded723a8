"""``dsprof.load(RUN)``: a run directory as meta plus DuckDB queries over its tables.

Tables are exposed as DuckDB views over ``tables/<name>/*.parquet`` (all ranks), so queries
scan Parquet out of core instead of loading a rank set into memory. A run recorded with
``--no-analyze`` is ingested on first load.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import pyarrow as pa

from dsprof.errors import RunDirError
from dsprof.rundir import RunDir


class Run:
    """A loaded run. Use :func:`dsprof.load` to get one.

    Attributes:
        path: the run directory.
        meta: the contents of meta.json.
    """

    def __init__(self, rundir: RunDir, meta: dict[str, Any]):
        self.rundir = rundir
        self.path = rundir.path
        self.meta = meta
        self._con: Any = None

    @property
    def tables(self) -> list[str]:
        return self.rundir.tables()

    def has(self, table: str) -> bool:
        return table in self.tables

    @property
    def con(self) -> Any:
        """A DuckDB connection with one view per table present."""
        if self._con is None:
            import duckdb

            con = duckdb.connect()
            for name in self.tables:
                glob = self.rundir.table_glob(name).replace("'", "''")
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{glob}', "
                            "union_by_name = true)")
            self._con = con
        return self._con

    def sql(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""
        return self.con.execute(query, params or []).fetchall()

    def arrow(self, query: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Run a query and return an Arrow table."""
        import duckdb

        con = self.con
        args = list(params) if params else None
        try:
            return con.sql(query, params=args).to_arrow_table()
        except duckdb.ResourceInUseException:
            # DuckDB 2 refuses new work while an execute() result is unfinished (a caller
            # used fetchone()); finishing any statement releases it.
            con.execute("SELECT 1").fetchall()
            return con.sql(query, params=args).to_arrow_table()

    def table(self, name: str) -> pa.Table:
        if not self.has(name):
            raise RunDirError(f"{self.path} has no {name!r} table")
        return self.arrow(f"SELECT * FROM {name}")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, tables={self.tables})"


def load(path: str | os.PathLike[str], *, ingest: bool = True) -> Run:
    """Open a run directory.

    Args:
        path: a directory written by ``dsprof run`` or ``dsprof import``.
        ingest: parse raw/ into tables first if that was never done (``--no-analyze`` runs).

    Raises:
        RunDirError: not a run directory, written by a newer dsprof, or empty.
    """
    rundir = RunDir(Path(path))
    meta = rundir.read_meta()
    if ingest and not meta.get("ingested") and rundir.raw_ranks():
        from dsprof.ingest.pipeline import ingest_notes, ingest_run

        results = ingest_run(rundir)
        meta = rundir.update_meta(ingested=True, events=sum(r.events for r in results),
                                  ingest_notes=ingest_notes(results))
    if not rundir.tables():
        raise RunDirError(f"{rundir.path} holds no data (no tables and nothing in raw/); "
                          "the run collected nothing: run it again, or import its traces")
    return Run(rundir, meta)
