"""Ingest of many ranks in worker processes, when there is enough data to pay for them.

(pipeline.py imports this module; the functions here import pipeline when they run.)
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsprof.log import logger
from dsprof.rundir import RunDir

if TYPE_CHECKING:
    from dsprof.ingest.pipeline import RankResult


# Ranks are ingested in parallel worker processes (one per CPU) only when there is this much
# trace data (uncompressed) in all: a worker is a fresh interpreter that spends ~0.4 s
# importing numpy and pyarrow. Measured on 2 cores: 4 ranks / 130 MB broke even, 8 ranks /
# 260 MB ran 1.3x faster; with more cores the gain grows, the start-up cost does not.
PARALLEL_MIN_BYTES = 256 << 20


def worker_count(run: RunDir, ranks: list[int], sizes: dict[int, int] | None = None) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if len(ranks) < 2 or cpus < 2 or not sys.executable:
        return 1
    sizes = _rank_sizes(run, ranks) if sizes is None else sizes
    return min(cpus, len(ranks)) if sum(sizes.values()) >= PARALLEL_MIN_BYTES else 1


def _rank_sizes(run: RunDir, ranks: list[int]) -> dict[int, int]:
    from dsprof.ingest.pipeline import is_trace_file

    return {rank: sum(_uncompressed_size(p) for p in run.raw_dir(rank).iterdir()
                      if is_trace_file(p)) for rank in ranks}


def _uncompressed_size(path: Path) -> int:
    """Size of the file's contents (for gzip, the trailer's size mod 2**32: an estimate)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            if fh.read(2) == b"\x1f\x8b" and size >= 18:
                fh.seek(-4, os.SEEK_END)
                return max(size, int.from_bytes(fh.read(4), "little"))
    except OSError:
        pass
    return size


_WORKER = ("import sys; from dsprof.ingest.parallel import _worker_main; "
           "_worker_main(sys.argv[1], [int(r) for r in sys.argv[2:]])")


def ingest_in_workers(run: RunDir, ranks: list[int], workers: int,
                       progress: Callable[[int, Path], None] | None) -> list[RankResult]:
    """Ranks shared out to ``workers`` ``python -c`` processes, balanced by size.

    Plain subprocesses rather than multiprocessing: spawn and forkserver re-import the
    caller's ``__main__`` (a user script that calls ``dsprof.load``), and fork is unsafe in a
    process whose pyarrow has started threads. Each worker ingests its ranks in turn and
    pickles the outcomes to stdout; an error is re-raised here, the lowest failing rank's.
    """
    from dsprof.ingest.pipeline import is_trace_file

    sizes = _rank_sizes(run, ranks)
    shares: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for rank in sorted(ranks, key=lambda r: -sizes[r]):
        k = load.index(min(load))
        shares[k].append(rank)
        load[k] += sizes[rank]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # so that the worker imports this dsprof
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    t0 = time.perf_counter()

    def work(share: list[int]) -> dict[int, tuple[str, Any]]:
        proc = subprocess.run([sys.executable, "-c", _WORKER, str(run.path),
                               *map(str, sorted(share))],
                              env=env, stdout=subprocess.PIPE, check=False)
        try:
            outcomes: dict[int, tuple[str, Any]] = pickle.loads(proc.stdout)
        except Exception:  # noqa: BLE001 - any unreadable output means the worker died
            err = RuntimeError(f"the ingest worker for rank(s) {sorted(share)} died (exit "
                               f"status {proc.returncode}); see its messages above")
            return {rank: ("error", err) for rank in share}
        for rank, (status, res) in outcomes.items():
            if status == "ok":
                logger.debug("ingested rank %d in a worker: %d events, %.2fs after start -> "
                             "%s; not kept: %s", rank, res.events, time.perf_counter() - t0,
                             res.rows, res.skipped)
                if progress is not None:
                    for path in sorted(p for p in run.raw_dir(rank).iterdir()
                                       if is_trace_file(p)):
                        progress(rank, path)
        return outcomes

    outcomes: dict[int, tuple[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in pool.map(work, [share for share in shares if share]):
            outcomes.update(done)
    for rank in ranks:  # ranks after a worker's failure have no outcome
        status, value = outcomes.get(rank, ("ok", None))
        if status != "ok":
            raise value
    return [outcomes[rank][1] for rank in ranks]


def _worker_main(run_path: str, ranks: list[int]) -> None:
    """Entry point of a worker process: ingest ``ranks`` in turn (stopping at the first
    error) and pickle ``{rank: ("ok", RankResult) | ("error", exception)}`` to stdout."""
    from dsprof.without_pandas import keep_pandas_out

    keep_pandas_out()  # dsprof's own process: pyarrow would import pandas for nothing
    from dsprof.ingest.pipeline import gc_paused, ingest_rank

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the result
    outcomes: dict[int, tuple[str, Any]] = {}
    with gc_paused():
        for rank in ranks:
            try:
                outcomes[rank] = ("ok", ingest_rank(RunDir(run_path), rank))
            except BaseException as exc:  # noqa: BLE001 - the parent raises it
                outcomes[rank] = ("error", exc)
                break
    try:
        payload = pickle.dumps(outcomes)
    except Exception:  # noqa: BLE001 - an unpicklable error still reaches the parent
        payload = pickle.dumps({rank: ("error", RuntimeError(f"rank {rank}: {value!r}"))
                                if status != "ok" else (status, value)
                                for rank, (status, value) in outcomes.items()})
    out.write(payload)
    out.flush()
