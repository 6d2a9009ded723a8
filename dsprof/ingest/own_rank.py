"""A rank ingests its own trace (DESIGN.md "Scale"): each rank of a multi-rank ``dsprof run``
turns its ``raw/rank<R>/`` into its Parquet parts as soon as its script ends, on its own node
and in parallel with every other rank, instead of the coordinator parsing every rank's trace in
turn. The coordinator's ingest then only reuses what each rank wrote.

A rank that ingested itself leaves ``raw/rank<R>/ingested.json``: the dsprof version, the
files of its raw folder (name, size, mtime of each, the log aside) and its counts. The coordinator reuses a rank
only when that record matches the rank's files now and every part it counted exists; any
doubt (a file added or rewritten later, another dsprof version, a part missing) means the
coordinator ingests that rank again, as it would have without the record.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson

from dsprof._version import __version__
from dsprof.ingest.pipeline import RankResult, gc_paused, ingest_rank
from dsprof.log import logger
from dsprof.rundir import INGESTED_FILE, RunDir

# the rank's log goes on being written after its ingest, and is no input of it
_NOT_INPUTS = (INGESTED_FILE, "dsprof.log")


def _inputs(raw: Path) -> list[list[Any]]:
    """Every file of ``raw`` that ingest may read (traces, census, snapshots, session and
    sampler records...), as [name, size, mtime_ns] rows, sorted."""
    rows = []
    for p in raw.iterdir():
        if p.name not in _NOT_INPUTS and not p.name.endswith(".tmp") and p.is_file():
            st = p.stat()
            rows.append([p.name, st.st_size, st.st_mtime_ns])
    return sorted(rows)


def ingest_own_rank(run: RunDir, rank: int) -> RankResult:
    """Ingest ``rank`` of ``run`` and record that it was done (``raw/rank<R>/ingested.json``)."""
    raw = run.raw_dir(rank)
    record_path = raw / INGESTED_FILE
    record_path.unlink(missing_ok=True)
    inputs = _inputs(raw)
    try:
        with gc_paused():
            res = ingest_rank(run, rank)
    except BaseException as exc:
        # a record without a result: the coordinator stops waiting and ingests the rank
        _write_record(record_path, {"version": __version__, "failed": repr(exc)[:500]})
        raise
    _write_record(record_path, {"version": __version__, "inputs": inputs,
                                "result": dataclasses.asdict(res)})
    return res


def _write_record(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(record))
    tmp.replace(path)


def wait_for_own_ingests(run: RunDir, ranks: list[int], timeout_s: float) -> list[int]:
    """Until each of ``ranks`` has written its record (ingested, or failed to), or
    ``timeout_s`` passed; returns the ranks still without one. The coordinator under the
    user's torchrun calls it so as not to parse a rank that is parsing itself."""
    deadline = time.monotonic() + timeout_s
    waiting = list(ranks)
    while True:
        waiting = [r for r in waiting
                   if not (run.path / "raw" / f"rank{r}" / INGESTED_FILE).is_file()]
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(0.05)


def already_ingested(run: RunDir, rank: int) -> RankResult | None:
    """The rank's own ingest result when its tables are current, else None."""
    raw = run.path / "raw" / f"rank{rank}"
    try:
        record = orjson.loads((raw / INGESTED_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    try:
        if record.get("version") != __version__ or record.get("inputs") != _inputs(raw):
            return None
        res = RankResult(**record["result"])
    except (AttributeError, KeyError, TypeError, OSError):
        logger.debug("rank %d: unreadable %s; ingesting it again", rank, INGESTED_FILE)
        return None
    for table, rows in res.rows.items():
        if rows and not (run.table_dir(table) / f"rank{rank}.parquet").is_file():
            return None
    return res


def remove_stale_parts(run: RunDir, ranks: list[int]) -> None:
    """Staged parts (``tables/<t>/.rank<R>.parquet.tmp-<pid>``) that a rank's own ingest left
    when it was stopped (the launcher ends the surviving ranks of a failed job), for ranks
    about to be ingested here: nothing reads them, and nothing else would remove them."""
    tables = run.path / "tables"
    if not tables.is_dir():
        return
    for rank in ranks:
        for part in tables.glob(f"*/.rank{rank}.parquet.tmp-*"):
            part.unlink(missing_ok=True)

