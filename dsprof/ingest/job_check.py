"""Are the traces given to ``dsprof import`` the ranks of one job?

A folder of traces becomes one run whose ranks are compared with each other (stragglers,
skew, world size), so traces of different jobs must not be imported together: two unrelated
``worker0`` files once became "world size 2" without a word. The check has two parts:

* **Before ingest**, from each file's first bytes (no full parse): the trace's
  ``distributedInfo`` (world size, backend, rank), the process id of its first host event and
  its ``host_name`` when the head holds them. Files disagreeing on world size or backend, and
  two files of the same rank (or of the same tb_plugin worker name, ``worker0.<ms>.pt.trace.json``)
  from different processes or hosts, are not one job. Files of one rank from one process are
  windows of that process and stay together.
* **After ingest**, from the Parquet footers' statistics (no table scan): each rank's time
  span. Ranks of one job run at the same time; spans apart by more than a minute and more than
  ten times the longer span were recorded at different times.

Either way the import is refused with one message that names the files and the reason, and
says to import them one by one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dsprof.errors import TraceFormatError

_DIST = re.compile(rb'"distributedInfo"\s*:\s*(\{)')
_HOST = re.compile(rb'"host_?name"\s*:\s*"([^"\\]{1,200})"')
# a host event ({"ph": "X", "cat": "cpu_op", ..., "pid": N}): its pid is the process's
_HOST_EVENT_PID = re.compile(
    rb'\{[^{}]*?"cat"\s*:\s*"(?:cpu_op|Operator|user_annotation|python_function)"[^{}]*?'
    rb'"pid"\s*:\s*"?(\d+)')
# tb_plugin's trace names: <worker>.<epoch ms>.pt.trace.json[.gz]
_WORKER = re.compile(r"^(.+?)\.\d{10,}\.pt\.trace\.json")

APART_MIN_NS = 60 * 10**9
"""Ranks of one job whose spans are further apart than this (and than ten times the longer
span) were not recorded together."""
_TIME_COLUMNS = (("ops", "start_ns"), ("kernels", "start_ns"), ("memory", "ts_ns"),
                 ("steps", "start_ns"))


@dataclass(frozen=True)
class TraceHeader:
    """What a trace's first bytes say about the job and process it comes from.

    Args:
        path: the user's file.
        rank: the rank it was given (distributedInfo, name, or next free).
        dist: its ``distributedInfo`` object when the head holds all of it, else None.
        pid: the process id of its first host event, when the head holds one.
        host: its ``host_name``, when the head holds one.
        worker: tb_plugin's worker name from the file name, when it has that form.
    """

    path: Path
    rank: int
    dist: dict[str, Any] | None
    pid: int | None
    host: str | None
    worker: str | None


def read_header(path: Path, head: bytes, rank: int) -> TraceHeader:
    """The header of ``path`` from ``head``, its first (decompressed) bytes."""
    m = _WORKER.match(path.name)
    pid = _HOST_EVENT_PID.search(head)
    host = _HOST.search(head)
    return TraceHeader(path, rank, _dist_info(head), int(pid.group(1)) if pid else None,
                       host.group(1).decode("utf-8", "replace") if host else None,
                       m.group(1) if m else None)


def _dist_info(head: bytes) -> dict[str, Any] | None:
    m = _DIST.search(head)
    if not m:
        return None
    depth, start = 0, m.start(1)
    for i in range(start, len(head)):
        c = head[i]
        if c == 0x7B:  # {
            depth += 1
        elif c == 0x7D:  # }
            depth -= 1
            if depth == 0:
                try:
                    info = orjson.loads(head[start:i + 1])
                except orjson.JSONDecodeError:
                    return None
                return info if isinstance(info, dict) else None
    return None


def check_one_job(headers: list[TraceHeader]) -> None:
    """Refuse files that cannot be the ranks (or one rank's windows) of one job.

    Raises:
        TraceFormatError: naming two files and what tells them apart.
    """
    if len(headers) < 2:
        return
    for key, what in (("world_size", "world size"), ("backend", "backend")):
        seen = [(h, h.dist[key]) for h in headers if h.dist and h.dist.get(key) is not None]
        for h, value in seen[1:]:
            if value != seen[0][1]:
                _refuse(seen[0][0], h, f"{what} {seen[0][1]} in one, {value} in the other "
                        "(distributedInfo)")
    for h in headers:
        size = h.dist.get("world_size") if h.dist else None
        if isinstance(size, int) and h.rank >= size:
            raise TraceFormatError(f"{h.path}: rank {h.rank} is outside its world size {size} "
                                   "(distributedInfo); the file is not a rank of that job")
    by_process: dict[tuple[str, Any], TraceHeader] = {}
    for h in headers:
        # one identity per process: its rank, or tb_plugin's worker name when no rank is known
        for ident in (("worker", h.worker), ("rank", h.rank)):
            if ident[1] is None:
                continue
            other = by_process.setdefault(ident, h)
            if other is h:
                continue
            label = f"rank {h.rank}" if ident[0] == "rank" else f"worker {h.worker}"
            if other.pid is not None and h.pid is not None and other.pid != h.pid:
                _refuse(other, h, f"both are {label} but come from different processes "
                        f"(pid {other.pid} and {h.pid})")
            if other.host and h.host and other.host != h.host:
                _refuse(other, h, f"both are {label} but come from different hosts "
                        f"({other.host} and {h.host})")


def check_spans(tables: Path, ranks: dict[int, list[Path]]) -> None:
    """After ingest: refuse ranks recorded at different times (their spans far apart).

    Args:
        tables: the run's ``tables/`` folder.
        ranks: each rank's files (for the message).

    Raises:
        TraceFormatError: naming the two ranks' files and the time between them.
    """
    spans = {r: s for r in ranks if (s := _span(tables, r)) is not None}
    order = sorted(spans.items(), key=lambda kv: kv[1][0])
    if not order:
        return
    ra, (a0, a1) = order[0]  # the rank that ends last among those started so far
    for rb, (b0, b1) in order[1:]:
        gap = b0 - a1
        if gap > APART_MIN_NS and gap > 10 * max(a1 - a0, b1 - b0):
            raise TraceFormatError(
                f"{_names(ranks[ra])} (rank {ra}) and {_names(ranks[rb])} (rank {rb}) were "
                f"recorded {_duration(gap)} apart, so they are not ranks of one job; import "
                "each on its own (dsprof import FILE)")
        if b1 > a1:
            ra, a0, a1 = rb, b0, b1


def _span(tables: Path, rank: int) -> tuple[int, int] | None:
    """The rank's first and last time over its tables, from the Parquet footers."""
    import pyarrow.parquet as pq  # after ingest only: the checks before it need no pyarrow

    lo: int | None = None
    hi: int | None = None
    for table, column in _TIME_COLUMNS:
        path = tables / table / f"rank{rank}.parquet"
        if not path.is_file():
            continue
        meta = pq.ParquetFile(path).metadata
        try:
            idx = meta.schema.names.index(column)
        except ValueError:
            continue
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(idx).statistics
            if stats is None or not stats.has_min_max:
                continue
            lo = stats.min if lo is None else min(lo, stats.min)
            hi = stats.max if hi is None else max(hi, stats.max)
    return (lo, hi) if lo is not None and hi is not None else None


def _refuse(a: TraceHeader, b: TraceHeader, why: str) -> None:
    raise TraceFormatError(f"{a.path} and {b.path} are not ranks of one job: {why}; import "
                           "each on its own (dsprof import FILE)")


def _names(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths[:2]) + (" ..." if len(paths) > 2 else "")


def _duration(ns: int) -> str:
    s = ns / 1e9
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} days"
