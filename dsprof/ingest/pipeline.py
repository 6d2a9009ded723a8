"""Ingest: ``raw/rank<R>/`` of a run directory -> ``tables/<name>/rank<R>.parquet``.

A rank's raw folder holds any number of trace files (one per profiler window for a
``dsprof run``, the user's files for ``dsprof import``), optionally ``session.json`` (the step
boundaries the step collector recorded for the whole run) and raw memory timelines. Each rank is
parsed on its own and written as one Parquet part per table, so analysis never needs more than
DuckDB's out-of-core scan over all ranks.
"""

from __future__ import annotations

import gc
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dsprof.errors import RunDirError
from dsprof.ingest import device_ops, memory_timeline
from dsprof.ingest.events import split
from dsprof.ingest.host_ops import build_host_ops, step_column
from dsprof.ingest.trace_file import KinetoTrace, MemoryTimelineRaw, parse, read_bytes
from dsprof.log import logger
from dsprof.rundir import SESSION_FILE, RunDir
from dsprof.schema import KERNELS, MEMORY, OPS, STEPS, Table

TRACE_SUFFIXES = (".json", ".json.gz", ".raw.gz", ".raw.json", ".raw.json.gz")


def is_trace_file(path: Path) -> bool:
    return path.is_file() and path.name != SESSION_FILE and path.name.endswith(TRACE_SUFFIXES)


@dataclass
class RankResult:
    rank: int
    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    trace_meta: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


def ingest_run(run: RunDir, progress: Callable[[int, Path], None] | None = None) -> list[RankResult]:
    """Parse every rank's raw files and (re)write the tables. Returns per-rank counts.

    Raises:
        RunDirError: the run has no raw data at all.
        TraceFormatError: a raw file is not a trace.
    """
    ranks = run.raw_ranks()
    if not ranks:
        raise RunDirError(f"{run.path} holds no raw data (raw/rank<R>/ is empty); "
                          "nothing was collected")
    results = []
    with _gc_paused():
        for rank in ranks:
            t0 = time.perf_counter()
            res = ingest_rank(run, rank, progress)
            logger.debug("ingested rank %d: %d events in %.2fs -> %s; not kept: %s", rank,
                         res.events, time.perf_counter() - t0, res.rows, res.skipped)
            results.append(res)
    return results


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector. Ingest allocates a few hundred thousand objects
    (decoded events, columns) that form no reference cycles; the collector's passes over them
    cost ~25 ms per 75k-event trace and free nothing (reference counting frees them)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def ingest_rank(run: RunDir, rank: int,
                progress: Callable[[int, Path], None] | None = None) -> RankResult:
    raw = run.raw_dir(rank)
    res = RankResult(rank)
    parts: dict[str, list[dict[str, Any]]] = {"ops": [], "kernels": [], "memory": []}
    step_spans: list[tuple[int, int, int]] = []
    next_id = 0
    paths = sorted(p for p in raw.iterdir() if is_trace_file(p))
    doc: KinetoTrace | MemoryTimelineRaw | None = None
    staged: dict[str, Future[_Staged]] = {}
    # Two threads do what releases the GIL: reading + gunzipping the next file while this one
    # is parsed, and encoding + writing Parquet, which runs beside the parsing (the ops table
    # of the last file is written while its kernels are matched) and beside the other writes.
    # Arrow tables are built here, in this thread: conversions that hold the GIL would only
    # slow the parsing down from another thread. Parts are written to temporary names and
    # renamed into place once every table of the rank is written.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="dsprof-ingest") as pool:

        def stage(name: str, table: Table, table_parts: list[dict[str, Any]]) -> None:
            staged[name] = pool.submit(_write_staged, run, table, rank,
                                       _build_table(table, table_parts))

        try:
            ahead = pool.submit(read_bytes, paths[0]) if paths else None
            for i, path in enumerate(paths):
                if progress is not None:
                    progress(rank, path)
                data = ahead.result()
                ahead = pool.submit(read_bytes, paths[i + 1]) if i + 1 < len(paths) else None
                doc = parse(path, data)
                del data
                if isinstance(doc, MemoryTimelineRaw):
                    parts["memory"].append(memory_timeline.build_memory(doc.records, rank=rank))
                    res.events += len(doc.records)
                    continue

                def ops_done(ops: dict[str, Any], last: bool = i == len(paths) - 1) -> None:
                    if last:
                        stage("ops", OPS, parts["ops"] + [ops])

                cols, spans, n_events = _trace_tables(doc, rank, next_id, res, ops_done)
                next_id += len(cols["ops"]["id"])
                for name, table_cols in cols.items():
                    parts[name].append(table_cols)
                step_spans.extend(spans)
                res.events += n_events
            steps_file = raw / SESSION_FILE
            if steps_file.is_file():
                steps_cols = steps_from_record(orjson.loads(steps_file.read_bytes()), rank)
            else:
                steps_cols = steps_from_spans(step_spans, rank)
            for name, table in (("ops", OPS), ("kernels", KERNELS), ("memory", MEMORY)):
                if name not in staged:
                    stage(name, table, parts[name])
            stage("steps", STEPS, [steps_cols])
            del doc, parts  # freeing the decoded trace overlaps the writes
            done = {name: f.result() for name, f in staged.items()}
        except BaseException:
            for f in staged.values():
                if f.exception() is None and f.result()[0] is not None:
                    f.result()[0].unlink(missing_ok=True)
            raise
    for name, part in done.items():
        res.rows[name] = _commit_part(part)
    return res


def _trace_tables(doc: KinetoTrace, rank: int, first_id: int, res: RankResult,
                  ops_done: Callable[[dict[str, Any]], None] | None = None):
    base = doc.base_ns
    parsed = split(doc.events)
    ops = build_host_ops(parsed.host, base_ns=base, rank=rank, first_id=first_id)
    ops.columns["step"] = _ops_steps(ops)
    if ops_done is not None:
        ops_done(ops.columns)
    kernels = device_ops.build_kernels(parsed.device, ops, base_ns=base, rank=rank)
    memory = device_ops.build_memory(parsed.memory, ops, base_ns=base, rank=rank)
    for key, count in parsed.skipped.items():
        res.skipped[key] = res.skipped.get(key, 0) + count
    meta = doc.metadata
    if not res.trace_meta:
        res.trace_meta = {k: meta[k] for k in ("deviceProperties", "distributedInfo",
                                               "schemaVersion") if k in meta}
    return {"ops": ops.columns, "kernels": kernels, "memory": memory}, ops.step_spans, \
        parsed.n_events


def _ops_steps(ops) -> pa.Int64Array:
    return step_column(ops.columns["start_ns"], ops.step_spans)


def steps_from_spans(spans: list[tuple[int, int, int]], rank: int) -> dict[str, Any]:
    """Steps of an imported trace: one row per ProfilerStep annotation."""
    spans = sorted(set(spans), key=lambda s: (s[1], s[0]))
    n = len(spans)
    return {
        "rank": [rank] * n,
        "step": [s[0] for s in spans],
        "start_ns": [s[1] for s in spans],
        "end_ns": [s[2] for s in spans],
        "dur_ns": [s[2] - s[1] for s in spans],
        "profiled": [True] * n,
        "window": [None] * n,
        "device_peak_bytes": [None] * n,
        "rss_bytes": [None] * n,
        "source": ["trace"] * n,
    }


def steps_from_record(rec: dict[str, Any], rank: int) -> dict[str, Any]:
    """Steps recorded by the step collector during a ``dsprof run`` (see collectors/steps.py)."""
    bounds: list[int] = list(rec.get("boundaries_ns", []))
    start0: int = rec["start_ns"]
    if not bounds and rec.get("end_ns"):
        # No boundary was ever marked: the whole run is step 0.
        bounds = [rec["end_ns"]]
    starts = [start0] + bounds[:-1]
    n = len(bounds)
    window_of: dict[int, int] = {}
    for w in rec.get("windows", []):
        for s in w.get("steps", []):
            window_of[s] = w["index"]
    rss = rec.get("rss_bytes") or [None] * n
    peak = rec.get("device_peak_bytes") or [None] * n
    return {
        "rank": [rank] * n,
        "step": list(range(n)),
        "start_ns": starts,
        "end_ns": bounds,
        "dur_ns": [e - s for s, e in zip(starts, bounds)],
        "profiled": [i in window_of for i in range(n)],
        "window": [window_of.get(i) for i in range(n)],
        "device_peak_bytes": list(peak[:n]) + [None] * (n - len(peak)),
        "rss_bytes": list(rss[:n]) + [None] * (n - len(rss)),
        "source": [rec.get("source", "optimizer")] * n,
    }


def write_part(run: RunDir, table: Table, rank: int, parts: list[dict[str, Any]]) -> int:
    """Concatenate column dicts and write ``tables/<name>/rank<R>.parquet`` atomically.

    An empty table writes no file (the table is then absent for that rank) and removes a stale
    part from an earlier ingest.
    """
    return _commit_part(_stage_part(run, table, rank, parts))


# (temporary file or None when the table is empty, target, rows)
_Staged = tuple[Path | None, Path, int]


def _stage_part(run: RunDir, table: Table, rank: int, parts: list[dict[str, Any]]) -> _Staged:
    """Build the table and write it to a temporary name next to its target."""
    return _write_staged(run, table, rank, _build_table(table, parts))


def _build_table(table: Table, parts: list[dict[str, Any]]) -> pa.Table | None:
    """The parts as one Arrow table, None when they hold no rows."""
    built = [table.build(p) for p in parts if len(next(iter(p.values()), [])) > 0]
    if not built or sum(t.num_rows for t in built) == 0:
        return None
    return pa.concat_tables(built) if len(built) > 1 else built[0]


def _write_staged(run: RunDir, table: Table, rank: int, data: pa.Table | None) -> _Staged:
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
    pq.write_table(data, tmp, compression="lz4", use_dictionary=text)
    return tmp, target, rows


def _commit_part(staged: _Staged) -> int:
    """Rename a staged part into place (or remove the stale part of an empty table)."""
    tmp, target, rows = staged
    if tmp is None:
        if target.exists():
            target.unlink()
    else:
        os.replace(tmp, target)
    return rows
