"""Each rank of a multi-rank run ingests its own trace; the coordinator's ingest reuses it, and
ingests a rank again whenever the rank's record does not match its files (issue 16)."""

from __future__ import annotations

import os
import shutil

import orjson

from dsprof.ingest.own_rank import already_ingested, ingest_own_rank
from dsprof.ingest.pipeline import ingest_run
from dsprof.rundir import INGESTED_FILE, RunDir
from tests.conftest import trace_dir


def _two_rank_run(tmp_path) -> RunDir:
    run = RunDir.create(tmp_path / "run")
    for rank, src in enumerate(sorted(trace_dir("hta_sampled_2rank_nccl").glob("*.json.gz"))):
        shutil.copyfile(src, run.raw_dir(rank) / src.name)
    return run


def _part(run: RunDir, rank: int):
    return run.table_dir("kernels") / f"rank{rank}.parquet"


def test_coordinator_reuses_what_each_rank_ingested(tmp_path):
    run = _two_rank_run(tmp_path)
    own = [ingest_own_rank(run, rank) for rank in (0, 1)]
    assert all((run.raw_dir(r) / INGESTED_FILE).is_file() for r in (0, 1))
    stamps = [_part(run, r).stat().st_mtime_ns for r in (0, 1)]
    os.utime(_part(run, 0), ns=(1, 1))  # so a rewrite would show
    results = ingest_run(run)
    assert _part(run, 0).stat().st_mtime_ns == 1 and _part(run, 1).stat().st_mtime_ns == stamps[1]
    assert [(r.rank, r.events, r.rows) for r in results] == [(r.rank, r.events, r.rows)
                                                             for r in own]
    assert own[0].rows["kernels"] > 0 and own[0].trace_meta == results[0].trace_meta


def test_a_rank_whose_files_changed_since_is_ingested_again(tmp_path):
    run = _two_rank_run(tmp_path)
    for rank in (0, 1):
        ingest_own_rank(run, rank)
    trace = next(run.raw_dir(1).glob("*.json.gz"))
    os.utime(trace, ns=(5, 5))  # rewritten after the rank's own ingest
    assert already_ingested(run, 0) is not None and already_ingested(run, 1) is None
    os.utime(_part(run, 0), ns=(1, 1))
    os.utime(_part(run, 1), ns=(1, 1))
    ingest_run(run)
    assert _part(run, 0).stat().st_mtime_ns == 1  # reused
    assert _part(run, 1).stat().st_mtime_ns != 1  # ingested again


def test_a_record_from_another_version_or_with_a_part_missing_is_not_trusted(tmp_path):
    run = _two_rank_run(tmp_path)
    ingest_own_rank(run, 0)
    record_path = run.raw_dir(0) / INGESTED_FILE
    record = orjson.loads(record_path.read_bytes())
    record_path.write_bytes(orjson.dumps({**record, "version": "0.0.0-other"}))
    assert already_ingested(run, 0) is None
    record_path.write_bytes(orjson.dumps(record))
    assert already_ingested(run, 0) is not None
    _part(run, 0).unlink()
    assert already_ingested(run, 0) is None
    record_path.write_bytes(b"{not json")
    assert already_ingested(run, 0) is None
    # a part staged by an own ingest that was stopped midway is removed, the rank ingested
    stale = _part(run, 0).with_name(".rank0.parquet.tmp-12345")
    stale.write_bytes(b"half a part")
    assert ingest_run(run)[0].rows["kernels"] > 0 and _part(run, 0).is_file()
    assert not stale.exists()


def test_a_failed_own_ingest_leaves_a_record_the_coordinator_does_not_reuse(tmp_path):
    import pytest

    from dsprof.errors import TraceFormatError

    run = _two_rank_run(tmp_path)
    next(run.raw_dir(1).glob("*.json.gz")).write_bytes(b'{"not": "a trace"}')
    with pytest.raises(TraceFormatError):
        ingest_own_rank(run, 1)
    record = orjson.loads((run.raw_dir(1) / INGESTED_FILE).read_bytes())
    assert "failed" in record and "result" not in record
    assert already_ingested(run, 1) is None


def test_the_coordinator_waits_for_records_only_as_long_as_it_is_told(tmp_path):
    import threading
    import time

    from dsprof.ingest.own_rank import wait_for_own_ingests

    run = _two_rank_run(tmp_path)
    ingest_own_rank(run, 0)
    # rank 1 writes its record a moment later: waited for
    later = threading.Timer(0.3, ingest_own_rank, (run, 1))
    later.start()
    t0 = time.monotonic()
    assert wait_for_own_ingests(run, [0, 1], timeout_s=30) == []
    assert 0.2 < time.monotonic() - t0 < 10
    later.join()
    # a rank that never writes one: given up on after the timeout
    (run.raw_dir(1) / INGESTED_FILE).unlink()
    t0 = time.monotonic()
    assert wait_for_own_ingests(run, [0, 1], timeout_s=0.3) == [1]
    assert time.monotonic() - t0 < 5


def test_the_coordinator_waits_for_no_own_ingest_of_a_rank_whose_script_failed(tmp_path,
                                                                                monkeypatch):
    # GIVEN rank 0 under the user's torchrun, done with its own ingest, and two finished
    # ranks: rank 1 succeeded and is ingesting itself, rank 2's script failed (it ended at
    # once, leaving its trace raw: dsprof/cli/run.py)
    from dsprof.cli import run as run_cmd
    from dsprof.ingest import own_rank
    from dsprof.rundir import SESSION_FILE

    run = RunDir.create(tmp_path / "run")
    for rank, status in ((1, 0), (2, 1)):
        (run.raw_dir(rank) / SESSION_FILE).write_bytes(orjson.dumps(
            {"rank": rank, "status": "finished", "exit_status": status}))
    waited: list[list[int]] = []
    monkeypatch.setattr(own_rank, "wait_for_own_ingests",
                        lambda run, ranks, timeout_s: waited.append(ranks) or [])
    # WHEN it waits for the others' own ingests
    run_cmd._wait_for_own_ingests(run, 3, own_s=0.5)
    # THEN only for rank 1's
    assert waited == [[1]]
