"""``dsprof import``: existing torch.profiler / Kineto traces -> a run directory.

Each input file goes to ``raw/rank<R>/``. R comes from the trace's ``distributedInfo.rank``
(read from the first bytes, without parsing the file), else from a ``rank<N>`` in the file
name, else files get consecutive ranks after the known ones (files of one tb_plugin worker name,
``worker0.<ms>.pt.trace.json``, share one). Files of the same rank are kept together (several
profiler windows of one process). Traces that are not the ranks of one job (``job_check``)
are refused, before and after ingest, with the reason. Files are hard-linked when possible, so a
multi-GB trace set is not copied; the run directory is then self-contained either way.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import re
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from dsprof._version import __version__
from dsprof.errors import TraceFormatError
from dsprof.ingest.job_check import TraceHeader, check_one_job, check_spans, read_header
from dsprof.ingest.trace_file import GZIP_MAGIC
from dsprof.ingest.trace_names import TRACE_SUFFIXES, is_trace_file
from dsprof.rundir import RunDir

if TYPE_CHECKING:
    from dsprof.ingest.pipeline import RankResult

_DIST_RANK = re.compile(rb'"distributedInfo"\s*:\s*\{[^}]*?"rank"\s*:\s*(\d+)')
_NAME_RANK = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)
_HEAD = 1 << 20
MAX_RANK = 2**31 - 1  # ranks are int32 in every table


def discover(paths: list[Path]) -> list[Path]:
    """The trace files named by ``paths`` (files, or folders searched recursively)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if is_trace_file(f))
            if not found:
                raise TraceFormatError(f"{p}: no trace files in this folder "
                                       "(expected *.json, *.json.gz or *.raw.gz)")
            files.extend(found)
        elif p.is_file():
            if not is_trace_name(p):
                raise TraceFormatError(
                    f"{p}: not a trace file (dsprof imports *.json, *.json.gz, *.raw.gz "
                    "torch.profiler/Kineto traces and *.pickle CUDA memory snapshots)")
            files.append(p)
        else:
            what = ("not a regular file or folder (a pipe, a device?)" if p.exists()
                    else "no such file or folder")
            raise TraceFormatError(f"{p}: {what}")
    return files


def is_trace_name(path: Path) -> bool:
    return path.name.endswith(TRACE_SUFFIXES)


def sniff(path: Path) -> None:
    """Refuse, before a run directory exists, a file whose first bytes cannot start a trace
    (JSON object or array, gzip, or a pickle for ``*.pickle``).

    Raises:
        TraceFormatError: naming the file and what it looks like instead.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not head:
        raise TraceFormatError(f"{path}: the file is empty; it is not a trace")
    if head[:2] == GZIP_MAGIC:
        return
    if path.name.endswith(".pickle"):
        if head[:1] != b"\x80":
            raise TraceFormatError(f"{path}: not a pickle, so not a CUDA memory snapshot")
        return
    if head.lstrip()[:1] not in (b"{", b"["):
        raise TraceFormatError(f"{path}: not JSON (it starts with {head[:16]!r}); "
                               "is it a torch.profiler trace?")


def _storable(value: Any) -> Any:
    """Trace metadata copied into meta.json, or an empty value when it cannot be stored
    (numbers past 64 bits, which JSON allows and orjson does not write)."""
    try:
        orjson.dumps(value)
    except TypeError:
        return type(value)()
    return value


def _users_names(message: str, copies: dict[str, str]) -> str:
    """An ingest error names the run's internal copy (raw/rank<R>/...): name the user's file."""
    for copy, original in copies.items():
        message = message.replace(copy, original)
    return message


def _head(path: Path) -> bytes:
    """The file's first bytes (up to 1 MiB), decompressed."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD)
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if head[:2] == GZIP_MAGIC:
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, _HEAD)
        except zlib.error as exc:
            raise TraceFormatError(f"{path}: the gzip stream is corrupt ({exc})") from None
    return head


def peek_rank(path: Path, head: bytes | None = None) -> int | None:
    head = _head(path) if head is None else head
    m = _DIST_RANK.search(head)
    if m:
        return int(m.group(1))
    m = _NAME_RANK.search(path.name)
    return int(m.group(1)) if m else None


def read_headers(files: list[Path]) -> list[TraceHeader]:
    """Each file's rank and what its head says about its job and process."""
    heads = {f: _head(f) for f in files}
    known = {f: peek_rank(f, heads[f]) for f in files}
    for f, r in known.items():
        if r is not None and r > MAX_RANK:
            raise TraceFormatError(f"{f}: rank {r} is out of range (a rank is below 2**31); "
                                   "the trace's distributedInfo or file name is wrong")
    next_rank = max([r for r in known.values() if r is not None], default=-1) + 1
    by_worker: dict[str, int] = {}
    out: list[TraceHeader] = []
    for f in files:
        r = known[f]
        header = read_header(f, heads[f], -1)
        if r is None and header.worker is not None and header.worker in by_worker:
            r = by_worker[header.worker]  # another window of the same tb_plugin worker
        if r is None:
            r, next_rank = next_rank, next_rank + 1
        if header.worker is not None:
            by_worker.setdefault(header.worker, r)
        out.append(dataclasses.replace(header, rank=r))
    return out


def _place(src: Path, dest_dir: Path) -> Path:
    dest = dest_dir / src.name
    n = 1
    while dest.exists():
        n += 1
        dest = dest_dir / f"{n}-{src.name}"
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


def import_traces(paths: list[Path], run_path: Path,
                  progress: Callable[[int, Path], None] | None = None
                  ) -> tuple[RunDir, list[RankResult]]:
    """Build a run directory at ``run_path`` from trace files. Nothing is left behind on error.

    Raises:
        TraceFormatError: a path is missing, a folder holds no traces, a file is not a trace.
        RunDirError: ``run_path`` exists or cannot be written.
    """
    files = discover(paths)
    for f in files:
        sniff(f)
    headers = read_headers(files)
    # the parser (pyarrow, numpy, msgspec structs) is loaded once the inputs are known good
    from dsprof.ingest.pipeline import ingest_notes, ingest_run

    check_one_job(headers)
    ranks = {h.path: h.rank for h in headers}
    run = RunDir.create(run_path)
    copies: dict[str, str] = {}
    try:
        for f, r in ranks.items():
            copies[str(_place(f, run.raw_dir(r)))] = str(f)
        results = ingest_run(run, progress)
        if not run.tables():  # an unusable run is never made
            names = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
            what = ("no events (an empty traceEvents list)" if not sum(r.events for r in results)
                    else "no event dsprof reads (no op, kernel, step, collective or memory event)")
            raise TraceFormatError(f"{names}: the trace holds {what}; there is nothing to import")
        per_rank: dict[int, list[Path]] = {}
        for f, r in ranks.items():
            per_rank.setdefault(r, []).append(f)
        check_spans(run.path / "tables", per_rank)
    except TraceFormatError as exc:
        shutil.rmtree(run.path, ignore_errors=True)
        raise TraceFormatError(_users_names(str(exc), copies)) from None
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    dist = _storable(next((r.trace_meta.get("distributedInfo") for r in results
                           if isinstance(r.trace_meta.get("distributedInfo"), dict)), {}) or {})
    props = _storable(next((r.trace_meta.get("deviceProperties") for r in results
                            if r.trace_meta.get("deviceProperties")), []) or [])
    run.write_meta({
        "source": "import",
        "status": "imported",
        "dsprof_version": __version__,
        "inputs": [str(p) for p in paths],
        "files": {str(f): r for f, r in ranks.items()},
        "ranks": sorted(set(ranks.values())),
        "world_size": dist.get("world_size", len(set(ranks.values()))),
        "distributed_info": dist,
        "trace_device_properties": props,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "ingested": True,
        "events": sum(r.events for r in results),
        "ingest_notes": ingest_notes(results),
        "rows": {t: sum(r.rows.get(t, 0) for r in results)
                 for t in ("ops", "kernels", "memory", "steps")},
        "clock": {"kind": "trace_epoch_ns", "rank_offsets_ns": {str(r): 0 for r in ranks.values()}},
    })
    return run, results
