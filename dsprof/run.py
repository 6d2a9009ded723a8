"""``dsprof.load(RUN)``: a run directory as its manifest plus DuckDB queries over its tables.

The run layer: :class:`Run` (tables as DuckDB views), its :class:`~dsprof.manifest.RunManifest`
(typed meta.json) and its :class:`~dsprof.facts.Facts` (step time, peak memory, device),
defined once and read by every later stage.

Tables are exposed as DuckDB views over ``tables/<name>/*.parquet`` (all ranks), so queries
scan Parquet out of core instead of loading a rank set into memory. A view has every column
of the current schema: a column that an older run's Parquet lacks reads as null, and the
derived columns of ``schema.VIEW_COLUMNS`` (``steps.disturbed``) are computed here. A run
recorded with ``--no-analyze`` is ingested on first load. :meth:`Run.from_tables` builds a
run in memory from column lists, for tests. :meth:`Run.aggregate` names the per-rank aggregate
tables that ingest writes (:mod:`dsprof.ingest.aggregates`) and computes them for a run that
lacks them, so ``summary`` never rescans ops or kernels of an ingested run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import pyarrow as pa

from dsprof.errors import RunDirError, RunStillRunning
from dsprof.manifest import RunManifest, parse
from dsprof.rundir import RunDir
from dsprof.schema import TABLES
from dsprof.schema_version import SCHEMA_VERSION
from dsprof.sqlsafe import (
    damaged_run,
    first_line,
    ident,
    parquet_files,
    relation_columns,
    table_name,
)

if TYPE_CHECKING:
    from dsprof.facts import Facts

MEMORY_PATH = Path(":memory:")
ONE_THREAD_MAX_BYTES = 16 << 20
"""A run with at most this many Parquet bytes is queried on one DuckDB thread: its queries are
tens of a few ms each, which DuckDB's thread pool runs with more CPU (3-10 % more for
``dsprof import``'s analysis of the shared traces, interleaved A/B) and no faster on a busy
machine. A bigger run keeps every core (DuckDB's default)."""


class Run:
    """A loaded run. Use :func:`dsprof.load` to get one.

    Attributes:
        path: the run directory.
        meta: the contents of meta.json, upgraded to the current schema (prefer ``manifest``).
        manifest: meta.json, typed.
        facts: step time, peak memory and device, by the one rule (:mod:`dsprof.facts`).
    """

    def __init__(self, rundir: RunDir, meta: dict[str, Any],
                 arrow_tables: dict[str, pa.Table] | None = None):
        self.rundir = rundir
        self.path = rundir.path
        self.meta = meta
        self._con: Any = None
        self._arrow = arrow_tables
        self._aggregates: set[str] = set()  # aggregates computed on the fly, registered in con
        self._tables: list[str] | None = None

    @classmethod
    def from_tables(cls, meta: dict[str, Any] | None = None,
                    **tables: Mapping[str, Sequence[Any]] | pa.Table) -> Run:
        """A run held in memory: each table from columns by name (those the schema has and
        the mapping lacks are null; ``rank`` defaults to 0), and meta.json's keys in ``meta``
        (default: a finished ``dsprof run``). For tests and for analyzers' synthetic cases.

        Raises:
            KeyError: an unknown table, or a column the table does not have.
        """
        built: dict[str, pa.Table] = {}
        for name, data in tables.items():
            if name not in TABLES:
                raise KeyError(f"no table {name!r} in the schema")
            if isinstance(data, pa.Table):
                built[name] = data
                continue
            cols = dict(data)
            n = max((len(v) for v in cols.values()), default=0)
            full = {c: cols.get(c, [0] * n if c == "rank" else [None] * n)
                    for c in TABLES[name].column_names}
            extra = set(cols) - set(full)
            if extra:
                raise KeyError(f"table {name!r} has no column(s) {sorted(extra)}")
            built[name] = TABLES[name].build(full)
        doc = {"schema_version": SCHEMA_VERSION, "source": "run", "status": "finished",
               **(meta or {})}
        return cls(RunDir(MEMORY_PATH), doc, built)

    @cached_property
    def manifest(self) -> RunManifest:
        return parse(self.meta)

    @cached_property
    def facts(self) -> Facts:
        from dsprof.facts import compute_facts

        return compute_facts(self)

    @property
    def tables(self) -> list[str]:
        if self._arrow is not None:
            return [n for n in TABLES if n in self._arrow and self._arrow[n].num_rows]
        # listed once: a loaded run's tables do not change (load() ingests before it returns,
        # and nothing writes tables through a Run); has() is asked dozens of times a command
        if self._tables is None:
            self._tables = self.rundir.tables()
        return list(self._tables)

    def has(self, table: str) -> bool:
        return table in self.tables

    @property
    def con(self) -> Any:
        """A DuckDB connection with one view per table present."""
        if self._con is None:
            self._con = self._connect(held=False)
        return self._con

    def _connect(self, held: bool) -> Any:
        """The connection and its views: over the registered Arrow tables of a run built in
        memory, else over the Parquet parts, read in place or (``held``) copied once into
        temporary tables that the views then read."""
        import duckdb

        con = duckdb.connect()
        if self._arrow is not None or self._parquet_bytes() <= ONE_THREAD_MAX_BYTES:
            con.execute("SET threads = 1")
        for name in self.tables:
            try:
                self._view(con, name, held)
            except duckdb.Error as exc:  # the files, not dsprof's SQL: it binds only them
                raise RunDirError(f"{self.path}: the {name!r} table cannot be read "
                                  f"({type(exc).__name__}: {first_line(exc)}); the run "
                                  "directory is damaged: import or run it again") from None
        return con

    def _view(self, con: Any, name: str, held: bool) -> None:
        if self._arrow is not None:
            con.register(f"_arrow_{name}", self._arrow[name])
            source = f"_arrow_{name}"
        else:
            source = f"read_parquet({parquet_files(self.rundir, name)}, union_by_name = true)"
            if held:
                copy = ident(f"_held_{name}")
                con.execute(f"CREATE TEMP TABLE {copy} AS SELECT * FROM {source}")
                source = copy
        con.execute(f"CREATE VIEW {table_name(name)} AS {self._view_select(con, name, source)}")

    def hold_tables_in_memory(self) -> bool:
        """Copy every table into an in-memory DuckDB table behind its view, for a caller about
        to run many queries (``dsprof import``'s analysis runs ~60): each query on a Parquet
        view binds ``read_parquet`` again (every file's schema) and decodes the columns it
        reads, so one read of everything costs less than the repeated ones. Only for runs small
        enough to query on one thread (``ONE_THREAD_MAX_BYTES``), where the copy's memory is
        small and rows keep the order the views give (one thread preserves insertion order);
        a larger run keeps its views. Returns whether the tables were copied.

        Before the first query, the copies are made straight from the Parquet parts and the
        views (with their derived columns) are laid over them: ``read_parquet`` is bound once
        per table instead of three times (the view's columns, the view, the copy), 10-15 ms
        of ``dsprof import``'s ~90 ms of connection set-up on hta_v100_1rank."""
        if self._arrow is not None or self._parquet_bytes() > ONE_THREAD_MAX_BYTES:
            return False
        if self._con is None:
            self._con = self._connect(held=True)
            return True
        con = self.con
        for name in self.tables:
            copy = ident(f"_held_{name}")
            con.execute(f"CREATE TEMP TABLE {copy} AS SELECT * FROM {table_name(name)}")
            con.execute(f"CREATE OR REPLACE VIEW {table_name(name)} AS SELECT * FROM {copy}")
        return True

    def _parquet_bytes(self) -> int:
        tables = self.path / "tables"
        try:
            return sum(p.stat().st_size for p in tables.rglob("*.parquet"))
        except OSError:
            return 0

    def _view_select(self, con: Any, name: str, source: str) -> str:
        """SELECT of a table's view: the stored columns, a null for each column of the current
        schema the stored data lacks (an older run), and the derived view columns."""
        stored = set(relation_columns(con, source))
        extra = []
        missing = [c for c in TABLES[name].column_names if c not in stored]
        if missing:
            con.register(f"_empty_{name}", TABLES[name].schema.empty_table())
            types = relation_columns(con, f"_empty_{name}")
            extra += [f"CAST(NULL AS {types[c]}) AS {ident(c)}" for c in missing]
        if name == "steps" and "disturbed" not in stored:
            # the ingest's reason when it wrote one (setup and first calls are left to the
            # step-number rule of facts.py: a DEBUG run's steps all count as disturbed), or
            # the windows of the manifest (older runs, synthetic ones)
            by_ingest = ("(disturbed_by IS NOT NULL AND disturbed_by NOT IN ('setup', "
                         "'first_call')) OR " if "disturbed_by" in stored else "")
            extra.append(f"({by_ingest}{disturbed_sql(self.manifest)}) AS disturbed")
        return "SELECT *" + "".join(f", {e}" for e in extra) + f" FROM {source}"

    def aggregate(self, name: str) -> str:
        """The relation to query for a per-rank aggregate (:mod:`dsprof.ingest.aggregates`):
        the table ingest wrote, or, for a run without them (ingested by an older dsprof, or
        built in memory), the same rows computed from ops, kernels and steps, once per Run.

        Raises:
            KeyError: ``name`` is not an aggregate table.
        """
        from dsprof.ingest.aggregates import AGGREGATE_TABLES, SOURCE_COLUMNS, compute_aggregates

        if name not in AGGREGATE_TABLES:
            raise KeyError(f"no aggregate table {name!r}")
        # rank_totals has a row for every ingested rank: it marks a run written with them (a
        # table with no rows, such as kernel_time of a CPU run, has no Parquet part)
        if self.has("rank_totals") and self.has(name):
            return table_name(name)
        relation = f"_aggregate_{name}"
        if relation not in self._aggregates:
            con = self.con
            if self.has("rank_totals"):
                built = {name: TABLES[name].schema.empty_table()}
            else:
                sources = {t: self.arrow(f"SELECT {', '.join(map(ident, cols))} "
                                         f"FROM {table_name(t)}")
                           for t, cols in SOURCE_COLUMNS.items() if self.has(t)}
                built = {n: TABLES[n].build(cols)
                         for n, cols in compute_aggregates(sources).items()}
                del sources
            for n, data in built.items():
                con.register(f"_aggregate_{n}", data)
                self._aggregates.add(f"_aggregate_{n}")
        return relation

    def sql(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return its rows. A page of a Parquet part that cannot be decoded
        (damaged inside, its magic bytes whole) is the run's damage, said in one line."""
        try:
            rows: list[tuple[Any, ...]] = self.con.execute(query, params or []).fetchall()
        except Exception as exc:
            if (damaged := damaged_run(exc)) is not None:
                raise damaged from None
            raise
        return rows

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
        return self.arrow(f"SELECT * FROM {table_name(name)}")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
            self._aggregates.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, tables={self.tables})"


def disturbed_steps(manifest: RunManifest) -> set[int]:
    """Steps of a ``dsprof run`` that dsprof itself slowed down: each profiler window's steps
    (the profiler records every op), the warm-up steps before it (Kineto is prepared) and the
    step after it (the trace is written then). Imports: none (the trace is all there is)."""
    if not manifest.is_run:
        return set()
    out: set[int] = set()
    for w in manifest.windows:
        if w.steps:
            out.update(range(min(w.steps) - manifest.warmup, max(w.steps) + 2))
    return {s for s in out if s >= 0}


def disturbed_sql(manifest: RunManifest) -> str:
    steps = sorted(disturbed_steps(manifest))
    return f"(step IN ({', '.join(map(str, steps))}))" if steps else "false"


def load(path: str | os.PathLike[str], *, ingest: bool = True) -> Run:
    """Open a run directory.

    Args:
        path: a directory written by ``dsprof run`` or ``dsprof import``.
        ingest: parse raw/ into tables first if that was never done (``--no-analyze`` runs).

    Raises:
        RunStillRunning: the run is still being written (it is read-only until it ends, and
            ingested once, by the process that writes it).
        RunDirError: not a run directory, written by a newer dsprof, or empty.
    """
    from dsprof.runlock import ingest_lock, running

    rundir = RunDir(Path(path))
    meta = rundir.read_meta()
    live = running(rundir)
    if live is not None:
        raise RunStillRunning(live.describe(rundir.path))
    if ingest and not meta.get("ingested") and rundir.raw_ranks():
        with ingest_lock(rundir):
            meta = rundir.read_meta()  # another command may have ingested it while we waited
            if not meta.get("ingested"):
                from dsprof.ingest.pipeline import ingest_notes, ingest_run
                from dsprof.late_ranks import merge_orphaned_ranks, refresh_late_ranks

                merge_orphaned_ranks(rundir)  # a coordinator killed before it merged
                refresh_late_ranks(rundir)  # the ingest reads their records as they are now
                results = ingest_run(rundir)
                meta = rundir.update_meta(ingested=True,
                                          events=sum(r.events for r in results),
                                          ingest_notes=ingest_notes(results))
    if not rundir.tables():
        raise RunDirError(_no_data(rundir, meta))
    return Run(rundir, meta)


def _no_data(rundir: RunDir, meta: Mapping[str, Any]) -> str:
    """Why a run holds no table, in one line: a run whose processes died before they saved
    anything (SIGKILL, the out-of-memory killer: no window written, no end recorded) is told
    apart from one that collected nothing."""
    from dsprof.runlock import steps_so_far

    if meta.get("status") == "running" and rundir.raw_ranks():
        steps = steps_so_far(rundir)
        n = len(rundir.raw_ranks())
        after = f", after {steps} step{'s' if steps != 1 else ''}" if steps else ""
        return (f"{rundir.path} holds no data: the run ended before it saved any (its "
                f"process{'es were' if n > 1 else ' was'} killed, or crashed without "
                f"Python's exit{after}, before its first profiled window was written); run it again")
    return (f"{rundir.path} holds no data (no tables and nothing in raw/); the run collected "
            "nothing: run it again, or import its traces")
