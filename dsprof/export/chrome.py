"""A run as one Chrome trace (Trace Event Format JSON): every rank, with findings marked.

It opens in Perfetto UI (ui.perfetto.dev) and chrome://tracing. Built from the tables, so an
imported cluster trace set exports the same way as a ``dsprof run``:

- one process per rank (``pid`` = rank, named ``rank R``), host threads as recorded;
- host ops (``ops``) as complete events (``ph: X``) with module, phase, step and shapes;
- device activity (``kernels``) on one track per stream (``stream N``);
- steps on a ``steps`` track, with the loss scale and skipped flag when a GradScaler ran;
- the allocator total (``memory.allocated``) as a counter (``ph: C``);
- findings (``findings.json``; analyzed first when absent) as instant events (``ph: i``) at
  their evidence's time on the rank it names, else once at the start of the trace.

Times are microseconds from the earliest event of the run (``otherData.t0_ns`` keeps that
origin), with each rank's clock offset from meta.json applied. ``perfetto`` writes the same
events gzip-compressed (Perfetto reads ``.json.gz`` directly; chrome://tracing wants plain
JSON); the format only picks the default file name and compression.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson

from dsprof.log import logger
from dsprof.run import Run
from dsprof.sqlsafe import table_columns

STREAM_TID = 0x7FFF0000  # device streams: above any Linux thread id (pid_max <= 2**22)
STEPS_TID = 0x7FFE0000
FINDINGS_TID = 0x7FFD0000
# the rows the timeline can place: tables are data (docs/security.md), and a row with a NULL
# rank or start is nowhere on it; a NULL thread or stream is thread 0, a NULL duration lasts 0
# (a NULL thread or start was a TypeError: int(None), None - int)
PLACED = "rank IS NOT NULL AND start_ns IS NOT NULL"


def default_path(run: Run, fmt: str) -> Path:
    return run.path / ("trace.perfetto.json.gz" if fmt == "perfetto" else "trace.chrome.json")


def build_trace(run: Run) -> dict[str, Any]:
    """The trace as a dict ready for JSON."""
    offsets = {int(k): int(v) for k, v in
               ((run.meta.get("clock") or {}).get("rank_offsets_ns") or {}).items()}
    t0 = _origin(run)
    events: list[dict[str, Any]] = []
    ranks: set[int] = set()

    def us(rank: int, ns: int) -> float:
        return (ns - offsets.get(rank, 0) - t0) / 1e3

    if run.has("ops"):
        for (rank, thread, name, cat, start, dur, module, phase, step, shapes, dtypes, flops,
             op_id) in run.sql(f"""
                SELECT rank, thread, name, cat, start_ns, dur_ns, module, phase, step,
                       input_shapes, dtypes, flops, id FROM ops WHERE {PLACED}
                ORDER BY rank, start_ns"""):
            ranks.add(rank)
            args = {"id": op_id, "module": module, "phase": phase, "step": step,
                    "input_shapes": shapes, "dtypes": dtypes, "flops": flops}
            events.append({"ph": "X", "name": name, "cat": cat, "pid": rank,
                           "tid": int(thread or 0) & 0x7FFFFFFF, "ts": us(rank, start),
                           "dur": max(dur or 0, 0) / 1e3,
                           "args": {k: v for k, v in args.items() if v is not None}})
    streams: set[tuple[int, int]] = set()
    if run.has("kernels"):
        for rank, stream, name, kind, start, dur, device, corr in run.sql(f"""
                SELECT rank, stream, name, kind, start_ns, dur_ns, device, correlation
                FROM kernels WHERE {PLACED} ORDER BY rank, start_ns"""):
            ranks.add(rank)
            s = int(stream or 0)
            streams.add((rank, s))
            args = {"device": device, "correlation": corr}
            events.append({"ph": "X", "name": name, "cat": f"kernel.{kind}", "pid": rank,
                           "tid": STREAM_TID + s, "ts": us(rank, start),
                           "dur": max(dur or 0, 0) / 1e3,
                           "args": {k: v for k, v in args.items() if v is not None}})
    if run.has("steps"):
        cols = table_columns(run, "steps")
        amp = "loss_scale, skipped" if {"loss_scale", "skipped"} <= cols else "NULL, NULL"
        for rank, step, start, dur, profiled, scale, skipped in run.sql(f"""
                SELECT rank, step, start_ns, dur_ns, profiled, {amp} FROM steps
                WHERE {PLACED} ORDER BY rank, step"""):
            ranks.add(rank)
            args = {"profiled": profiled, "loss_scale": scale, "skipped": skipped}
            events.append({"ph": "X", "name": f"step {step}", "cat": "step", "pid": rank,
                           "tid": STEPS_TID, "ts": us(rank, start),
                           "dur": max(dur or 0, 0) / 1e3,
                           "args": {k: v for k, v in args.items() if v is not None}})
    if run.has("memory"):
        for rank, ts, allocated in run.sql("""
                SELECT rank, ts_ns, allocated FROM memory
                WHERE ts_ns IS NOT NULL AND allocated IS NOT NULL ORDER BY rank, ts_ns"""):
            events.append({"ph": "C", "name": "allocated bytes", "pid": rank, "tid": 0,
                           "ts": us(rank, ts), "args": {"allocated": allocated}})
    events.extend(_finding_events(run, ranks, us))
    events.extend(_metadata(ranks, streams))
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"dsprof_run": str(run.path), "t0_ns": t0,
                          "source": run.meta.get("source"),
                          "ranks": sorted(ranks)}}


def write_trace(run: Run, fmt: str, path: Path | None = None) -> tuple[Path, int]:
    """Write the trace; ``.gz`` paths are gzip-compressed. Returns (path, event count)."""
    from dsprof.rundir import atomic_write_bytes

    path = path or default_path(run, fmt)
    doc = build_trace(run)
    data = orjson.dumps(doc)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    atomic_write_bytes(path, data)
    return path, len(doc["traceEvents"])


def _origin(run: Run) -> int:
    starts = []
    for table, col in (("steps", "start_ns"), ("ops", "start_ns"), ("kernels", "start_ns")):
        if run.has(table):
            v = run.sql(f"SELECT min({col}) FROM {table}")[0][0]
            if v is not None:
                starts.append(int(v))
    return min(starts) if starts else 0


def _finding_events(run: Run, ranks: set[int], us) -> list[dict[str, Any]]:
    # An exporter only reads: a run never analyzed (no findings.json) exports without
    # finding markers; `dsprof analyze RUN` writes them.
    from dsprof.analyzers.registry import read_findings

    found = read_findings(run)
    if found is None:
        logger.info("export: %s has no findings.json (run `dsprof analyze`); no finding "
                    "markers in the trace", run.path)
        return []
    out = []
    for f in found.findings:
        args = {"id": f.id, "kind": f.kind, "severity": f.severity, "saving_s": f.saving_s,
                "saving_bytes": f.saving_bytes, "explanation": f.explanation, "fix": f.fix}
        placed = False
        for ev in f.evidence:
            if ev.start_ns is None:
                continue
            rank = ev.rank if ev.rank is not None else min(ranks, default=0)
            out.append({"ph": "i", "s": "p", "name": f.title, "cat": "dsprof.finding",
                        "pid": rank, "tid": FINDINGS_TID, "ts": us(rank, ev.start_ns),
                        "args": {**args, "evidence": ev.text}})
            placed = True
        if not placed:
            out.append({"ph": "i", "s": "g", "name": f.title, "cat": "dsprof.finding",
                        "pid": min(ranks, default=0), "tid": FINDINGS_TID, "ts": 0.0,
                        "args": args})
    return out


def _metadata(ranks: set[int], streams: set[tuple[int, int]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rank in sorted(ranks):
        out.append({"ph": "M", "name": "process_name", "pid": rank, "tid": 0,
                    "args": {"name": f"rank {rank}"}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0,
                    "args": {"sort_index": rank}})
        for tid, name in ((STEPS_TID, "steps"), (FINDINGS_TID, "dsprof findings")):
            out.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid,
                        "args": {"name": name}})
    for rank, stream in sorted(streams):
        out.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": STREAM_TID + stream,
                    "args": {"name": f"stream {stream}"}})
    return out
