"""Ingest: ``raw/rank<R>/`` of a run directory -> ``tables/<name>/rank<R>.parquet``.

A rank's raw folder holds any number of trace files (one per profiler window for a
``dsprof run``, the user's files for ``dsprof import``), optionally ``session.json`` (the step
boundaries the step collector recorded for the whole run) and raw memory timelines. Each rank is
parsed on its own and written as one Parquet part per table, so analysis never needs more than
DuckDB's out-of-core scan over all ranks.

Speed (``benchmarks/ingest.py`` measures it): within a rank, a second thread reads and gunzips
the next file and writes Parquet while the main thread parses; with a lot of data in several
ranks (``PARALLEL_MIN_BYTES``), ranks are shared out to worker processes, one per CPU; and the
cyclic garbage collector is paused while ingest allocates its short-lived objects.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from dsprof.errors import RunDirError, TraceFormatError
from dsprof.ingest import device_ops, memory_timeline
from dsprof.ingest.aggregates import SOURCE_TABLES, rank_aggregates
from dsprof.ingest.anomalies import anomaly_rows
from dsprof.ingest.array_split import parse_split
from dsprof.ingest.comms import build_comms
from dsprof.ingest.compiles import compiles_from_record
from dsprof.ingest.cupti_kernels import build_cupti_kernels
from dsprof.ingest.heap import release_free_memory
from dsprof.ingest.host_ops import build_host_ops
from dsprof.ingest.memory_ingest import MEMORY_TABLES, SNAPSHOT_SUFFIX, MemoryParts
from dsprof.ingest.parallel import ingest_in_workers, worker_count
from dsprof.ingest.parts import Staged, build_table, commit_part, write_staged
from dsprof.ingest.samples import build_device_samples
from dsprof.ingest.split_trace import SplitTrace
from dsprof.ingest.steps import (
    dataloaders_from_record,
    host_syncs_from_record,
    step_column,
    steps_from_record,
    steps_from_spans,
)
from dsprof.ingest.trace_file import KinetoTrace, MemoryTimelineRaw, read_mapped
from dsprof.ingest.trace_names import TRACE_SUFFIXES, is_trace_file  # noqa: F401 - imported from here
from dsprof.log import logger
from dsprof.rundir import (
    ANOMALY_FILE,
    CUPTI_KERNELS_FILE,
    SAMPLES_FILE,
    SESSION_FILE,
    RunDir,
)
from dsprof.schema import (
    ANOMALIES,
    COMMS,
    COMPILES,
    CUPTI_KERNELS,
    DATALOADERS,
    DEVICE_SAMPLES,
    HOST_SYNCS,
    KERNELS,
    OPS,
    STEPS,
    TABLES,
    Table,
)

# Exceptions that malformed input raises deep in ingest; turned into one TraceFormatError.
DATA_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
               RecursionError, orjson.JSONDecodeError, pa.ArrowException)

# a trace holding less than this share of its numbered host events was down-sampled
SAMPLED_BELOW = 0.9

@dataclass
class RankResult:
    rank: int
    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    trace_meta: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    # ops whose FLOPs could not be derived, by op name (see ingest_notes)
    flops_unknown: dict[str, int] = field(default_factory=dict)
    # host events kept / host events the profiler numbered (``Ev Idx`` span); None when the
    # trace numbers none. Under 1: the trace was down-sampled (see ingest_notes)
    events_kept: float | None = None


def ingest_notes(results: list[RankResult]) -> dict[str, Any]:
    """What ingest could not derive, for meta.json's ``ingest_notes`` (``dsprof summary``
    prints it): a per-event derivation that fails gives a null for that event and is counted
    here, it never fails the ingest. Logs one line when there is something to say."""
    notes: dict[str, Any] = {}
    kept = {res.rank: res.events_kept for res in results
            if res.events_kept is not None and res.events_kept < SAMPLED_BELOW}
    if kept:
        notes["sampled"] = {str(r): round(k, 4) for r, k in sorted(kept.items())}
        logger.info("the trace of rank(s) %s keeps %s of the profiler's host events (Ev Idx "
                    "gaps): it was down-sampled, so gaps between its events are not idle time",
                    ", ".join(map(str, sorted(kept))),
                    ", ".join(f"{k:.1%}" for _, k in sorted(kept.items())))
    unknown: dict[str, int] = {}
    for res in results:
        for name, count in res.flops_unknown.items():
            unknown[name] = unknown.get(name, 0) + count
    if not unknown:
        return notes
    n = sum(unknown.values())
    logger.info("FLOPs unknown for %d ops of %d kinds (%s): their input shapes or arguments "
                "were not recorded in a layout the formulas know", n, len(unknown),
                ", ".join(f"{k} x{v}" for k, v in sorted(unknown.items(), key=lambda kv: -kv[1])))
    return {**notes, "flops_unknown": {"ops": n, "kinds": dict(sorted(unknown.items()))}}


def ingest_run(run: RunDir, progress: Callable[[int, Path], None] | None = None) -> list[RankResult]:
    """Parse every rank's raw files and (re)write the tables. Returns per-rank counts.

    Raises:
        RunDirError: the run has no raw data at all.
        TraceFormatError: a raw file is not a trace.
    """
    from dsprof.ingest.own_rank import already_ingested, remove_stale_parts

    ranks = run.raw_ranks()
    if not ranks:
        raise RunDirError(f"{run.path} holds no raw data (raw/rank<R>/ is empty); "
                          "nothing was collected")
    # ranks of a multi-rank `dsprof run` ingested themselves when their script ended
    done = {rank: res for rank in ranks if (res := already_ingested(run, rank)) is not None}
    remove_stale_parts(run, [rank for rank in ranks if rank not in done])
    if done:
        logger.debug("ranks %s were ingested by their own process", sorted(done))
        todo = [rank for rank in ranks if rank not in done]
        fresh = ingest_run_ranks(run, todo, progress) if todo else []
        return sorted([*done.values(), *fresh], key=lambda r: r.rank)
    return ingest_run_ranks(run, ranks, progress)


def ingest_run_ranks(run: RunDir, ranks: list[int],
                     progress: Callable[[int, Path], None] | None = None) -> list[RankResult]:
    """Ingest ``ranks`` of ``run``: in worker processes when there is enough data."""
    workers = worker_count(run, ranks)
    with gc_paused():
        if workers > 1:
            return ingest_in_workers(run, ranks, workers, progress)
        results = []
        for rank in ranks:
            t0 = time.perf_counter()
            res = ingest_rank(run, rank, progress)
            logger.debug("ingested rank %d: %d events in %.2fs -> %s; not kept: %s", rank,
                         res.events, time.perf_counter() - t0, res.rows, res.skipped)
            results.append(res)
    return results


@contextmanager
def arrow_system_pool() -> Iterator[None]:
    """Arrow allocates from the C library's heap while ingest runs. Its default pool
    (mimalloc) keeps the pages of freed buffers for reuse, and ingest frees a trace's columns
    as soon as their tables are built, so with it the peak RSS was the sum of every stage's
    buffers: 64.8 MB for hta_v100_1rank (15.4 MB of JSON) against 35.8 MB with the system
    pool, for the same CPU time. The previous pool is restored after (buffers remember the
    pool they came from)."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


@contextmanager
def gc_paused() -> Iterator[None]:
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
    """Parse rank ``rank``'s raw files and write its tables (in this process, whichever
    process that is: the rank's own, a worker, or ``dsprof import``'s)."""
    with arrow_system_pool():
        return _ingest_rank(run, rank, progress)


def _ingest_rank(run: RunDir, rank: int,
                 progress: Callable[[int, Path], None] | None = None) -> RankResult:
    raw = run.raw_dir(rank)
    res = RankResult(rank)
    parts: dict[str, list[dict[str, Any]]] = {"ops": [], "kernels": [], "comms": []}
    memory = MemoryParts(raw, rank)
    step_spans: list[tuple[int, int, int]] = []
    next_id = 0
    # snapshots are read with the window they belong to, or on their own at the end
    paths = sorted(p for p in raw.iterdir()
                   if is_trace_file(p) and not p.name.endswith(SNAPSHOT_SUFFIX))
    doc: KinetoTrace | MemoryTimelineRaw | None = None
    current: Path = raw
    staged: dict[str, Future[Staged]] = {}
    sources: dict[str, pa.Table] = {}  # ops, kernels, steps as built: the aggregates' input
    # Two threads do what releases the GIL: reading + gunzipping the next file while this one
    # is parsed, and encoding + writing Parquet, which runs beside the parsing (the ops table
    # of the last file is written while its kernels are matched) and beside the other writes.
    # Arrow tables are built here, in this thread: conversions that hold the GIL would only
    # slow the parsing down from another thread. Parts are written to temporary names and
    # renamed into place once every table of the rank is written.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="dsprof-ingest") as pool:

        def stage(name: str, table: Table, table_parts: list[dict[str, Any]]) -> None:
            data = build_table(table, table_parts)
            if name in SOURCE_TABLES and data is not None:
                sources[name] = data
            staged[name] = pool.submit(write_staged, run, table, rank, data)

        try:
            ahead = pool.submit(read_mapped, paths[0]) if paths else None
            for i, path in enumerate(paths):
                current = path
                if progress is not None:
                    progress(rank, path)
                data = ahead.result()
                ahead = pool.submit(read_mapped, paths[i + 1]) if i + 1 < len(paths) else None
                owned = [data]
                del data
                # the split straight from the text where it can be (dsprof.ingest.array_split)
                doc, parsed = parse_split(path, owned)
                if isinstance(doc, MemoryTimelineRaw):
                    memory.add_rows(memory_timeline.build_memory(doc.records, rank=rank))
                    res.events += len(doc.records)
                    continue

                def ops_done(ops: dict[str, Any], last: bool = i == len(paths) - 1) -> None:
                    if last:
                        stage("ops", OPS, parts.pop("ops") + [ops])

                _note_trace_meta(doc, res)
                base_ns, dist_info = doc.base_ns, doc.doc.distributedInfo
                # the split frees the trace's raw events, then its buffer, as soon as it is
                # done with them (before the tables are built and the next file is read)
                parsed = doc.split(release=True) if parsed is None else parsed
                doc = None
                cols, spans, n_events = _trace_tables(parsed, base_ns, dist_info, rank, next_id,
                                                      res, ops_done)
                del parsed
                # the split trace and the builders' temporaries: their pages back to the
                # system before the next stage (dsprof.ingest.heap)
                release_free_memory()
                next_id += len(cols["ops"]["id"])
                memory.add_trace(path, cols.pop("memory"), cols.pop("ops_objects"), spans)
                for name, table_cols in cols.items():
                    if name not in staged:  # (the last file's ops are staged already)
                        parts[name].append(table_cols)
                # the columns are referenced from ``parts`` only, so staging a table frees them
                cols = table_cols = None
                step_spans.extend(spans)
                res.events += n_events
            # what fails from here is the rank's tables: a rank of one trace names that trace
            # (the import's message then names the user's file, not the copy in raw/)
            current = paths[0] if len(paths) == 1 else raw
            steps_file = raw / SESSION_FILE
            record = orjson.loads(steps_file.read_bytes()) if steps_file.is_file() else None
            # a rank that died before saving has only its start record: steps from the traces
            if record is not None and record.get("status") != "running":
                steps_cols = steps_from_record(record, rank, _meta_or_empty(run))
                stage("dataloaders", DATALOADERS, [dataloaders_from_record(record, rank)])
                stage("host_syncs", HOST_SYNCS, [host_syncs_from_record(record, rank)])
            else:
                steps_cols = steps_from_spans(step_spans, rank)
            memory.finish()
            res.events += memory.events
            for name, table in (("ops", OPS), ("kernels", KERNELS), ("comms", COMMS)):
                if name not in staged:
                    stage(name, table, parts.pop(name))
            for name in MEMORY_TABLES:
                stage(name, TABLES[name], memory.parts[name])
            stage("steps", STEPS, [steps_cols])
            spans = list(zip(steps_cols["step"], steps_cols["start_ns"], steps_cols["end_ns"]))
            for fname, tname, table, build in (
                    (SAMPLES_FILE, "device_samples", DEVICE_SAMPLES, build_device_samples),
                    (CUPTI_KERNELS_FILE, "cupti_kernels", CUPTI_KERNELS, build_cupti_kernels)):
                if (raw / fname).is_file():
                    doc_ = orjson.loads((raw / fname).read_bytes())
                    stage(tname, table, [build(doc_, rank, spans)])
            if record is not None and record.get("status") != "running":
                stage("compiles", COMPILES, [compiles_from_record(record, rank, spans)])
            anomaly_file = raw / ANOMALY_FILE
            stage("anomalies", ANOMALIES, [anomaly_rows(orjson.loads(anomaly_file.read_bytes()),
                                                        rank)] if anomaly_file.is_file() else [])
            doc = None  # freeing the decoded trace overlaps the writes
            parts.clear()
            memory = None
            # the summaries that commands read instead of rescanning ops and kernels,
            # computed while the big tables are written (none for a rank with no data: a
            # trace without events stays a run with no tables)
            if sources:
                for name, columns in rank_aggregates(sources, rank).items():
                    stage(name, TABLES[name], [columns])
            sources.clear()
            done = {name: f.result() for name, f in staged.items()}
        except BaseException as exc:
            for f in staged.values():
                if f.exception() is None and f.result()[0] is not None:
                    f.result()[0].unlink(missing_ok=True)
            if isinstance(exc, DATA_ERRORS):
                # A value no real trace holds (invalid UTF-8 in a string, a number of the
                # wrong type or range): one line naming the file, the details in the log.
                logger.debug("ingest of %s failed", current, exc_info=True)
                raise TraceFormatError(
                    f"{current}: dsprof cannot read this trace ({type(exc).__name__}: "
                    f"{str(exc)[:200]}); if it is a real torch.profiler trace, please report "
                    "it (DS_LOG_LEVEL=DEBUG shows where it failed)") from None
            raise
    for name, part in done.items():
        res.rows[name] = commit_part(part)
    return res


def _note_trace_meta(doc: KinetoTrace, res: RankResult) -> None:
    if not res.trace_meta:
        meta = doc.metadata
        res.trace_meta = {k: meta[k] for k in ("deviceProperties", "distributedInfo",
                                               "schemaVersion") if k in meta}


def _trace_tables(parsed: SplitTrace, base: int, dist_info: Any, rank: int, first_id: int,
                  res: RankResult, ops_done: Callable[[dict[str, Any]], None] | None = None):
    ops = build_host_ops(parsed.host, base_ns=base, rank=rank, first_id=first_id)
    ops.columns["step"] = _ops_steps(ops)
    if ops_done is not None:
        ops_done(ops.table_columns())
    kernels = device_ops.build_kernels(parsed.device, ops, base_ns=base, rank=rank)
    memory = device_ops.build_memory(parsed.memory, ops, base_ns=base, rank=rank)
    comms = build_comms(parsed.host, parsed.device, ops, kernels, base_ns=base, rank=rank,
                        dist_info=dist_info)
    for key, count in parsed.skipped.items():
        res.skipped[key] = res.skipped.get(key, 0) + count
    for key, count in ops.flops_unknown.items():
        res.flops_unknown[key] = res.flops_unknown.get(key, 0) + count
    kept = _events_kept(parsed.ev_idx)
    if kept is not None:
        res.events_kept = kept if res.events_kept is None else min(res.events_kept, kept)
    # (the memory tables read the ops columns with text as Python str: ``ops_objects``)
    return {"ops": ops.table_columns(), "ops_objects": ops.columns, "kernels": kernels,
            "memory": memory, "comms": comms}, \
        ops.step_spans, \
        parsed.n_events


def _events_kept(idx: np.ndarray) -> float | None:
    """Share of the profiler's numbered events (``Ev Idx``: host ops, annotations and
    instants such as ``[memory]``) the trace holds."""
    if len(idx) < 2:
        return None
    lo, span = int(idx.min()), int(idx.max()) - int(idx.min()) + 1
    if idx.dtype == np.int64 and span <= 16 * len(idx) + 4096:
        # the indices seen, as a bitmap over their range: 100x np.unique's sort
        seen = np.zeros(span, bool)
        seen[idx - lo] = True
        return int(np.count_nonzero(seen)) / span
    return len(np.unique(idx)) / span


def _ops_steps(ops) -> pa.Int64Array:
    return step_column(ops.columns["start_ns"], ops.step_spans)


def _meta_or_empty(run: RunDir) -> dict[str, Any]:
    """meta.json for the disturbed-steps rule; a run without one still ingests (no step is
    then known to be disturbed beyond the windows)."""
    try:
        return run.read_meta()
    except Exception:  # noqa: BLE001 - a missing or odd meta.json must not stop ingest
        return {}
