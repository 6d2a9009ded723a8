"""The comms table and the communication analyses: nccl-tests bandwidth, the NCCL traces in
../shared/traces against HTA 0.5.0's comm-comp overlap, arrival skew, merging rank records."""

from __future__ import annotations

import duckdb
import orjson
import pytest

from dsprof.analyzers.data_parallel import DataParallelAnalyzer
from dsprof.analyzers.registry import Context
from dsprof.ingest.comms import bandwidths, collective_name
from dsprof.ingest.importer import import_traces
from dsprof.late_ranks import refresh_late_ranks
from dsprof.metrics.comm.overlap import comm_overlap
from dsprof.metrics.comm.skew import collective_skew, offsets_sql, rank_skew
from dsprof.metrics.gpu.hta_view import hta_rounded
from dsprof.ranks import STILL_RUNNING, merge_ranks
from dsprof.run import Run, load
from dsprof.rundir import SESSION_FILE, RunDir
from dsprof.schema import COMMS, OPS
from tests.conftest import trace_dir


@pytest.mark.parametrize("raw, name", [
    ("c10d::allreduce_", "all_reduce"), ("gloo:all_reduce", "all_reduce"),
    ("allreduce", "all_reduce"), ("_allgather_base", "all_gather"),
    ("allgather_into_tensor_coalesced", "all_gather"), ("c10d::allgather_", "all_gather"),
    ("reduce_scatter_tensor_coalesced", "reduce_scatter"), ("alltoall_base", "all_to_all"),
    ("nccl:all_to_all", "all_to_all"), ("c10d::broadcast_", "broadcast"),
    ("c10d::barrier", "barrier"), ("send", "send"), ("recv", "recv")])
def test_collective_names_are_normalized(raw, name):
    assert collective_name(raw) == name


def test_bandwidth_follows_nccl_tests():
    # 1 GB in 1 s on 8 ranks: algbw 1 GB/s; all_reduce busbw x 2*7/8
    mb = 10**9
    assert bandwidths("all_reduce", mb, mb, 10**9, 8) == (1.0, pytest.approx(1.75))
    # all_gather sizes by the (total) output
    assert bandwidths("all_gather", mb // 8, mb, 10**9, 8) == (1.0, pytest.approx(0.875))
    assert bandwidths("reduce_scatter", mb, mb // 8, 10**9, 8) == (1.0, pytest.approx(0.875))
    assert bandwidths("all_to_all", mb, mb, 10**9, 4) == (1.0, pytest.approx(0.75))
    assert bandwidths("broadcast", mb, mb, 10**9, 8) == (1.0, 1.0)
    assert bandwidths("barrier", 0, 0, 10**6, 8) == (None, None)
    assert bandwidths("all_reduce", mb, mb, 10**9, None) == (1.0, None)
    assert bandwidths("all_reduce", mb, mb, 0, 8) == (None, None)


@pytest.fixture(scope="module")
def a100(tmp_path_factory):
    run, _ = import_traces([trace_dir("hta_a100_2rank_nccl_r0")],
                           tmp_path_factory.mktemp("a100") / "run")
    with load(run.path) as r:
        yield r


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    run, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")],
                           tmp_path_factory.mktemp("sampled") / "run")
    with load(run.path) as r:
        yield r


def test_nccl_kernels_become_comms_rows(a100):
    # GIVEN the A100 trace: 15 all_reduce and 6 broadcast NCCL kernels with Collective name args
    rows = a100.sql("""SELECT collective, count(*), min(group_size), min("group"),
                       bool_and(source = 'nccl_kernel'), bool_and(op_id IS NOT NULL)
                       FROM comms GROUP BY collective ORDER BY collective""")
    assert rows == [("all_reduce", 15, 2, "0", True, True), ("broadcast", 6, 2, "0", True, True)]
    # THEN sizes are the message elements times the dtype size, and for 2 ranks busbw = algbw
    first = a100.sql("""SELECT in_bytes, dtype, dur_ns, algbw_gbps, busbw_gbps FROM comms
                        WHERE collective = 'all_reduce' ORDER BY start_ns LIMIT 1""")[0]
    assert first[:2] == (2049000 * 4, "Float")
    assert first[3] == pytest.approx(first[0] / first[2]) and first[4] == pytest.approx(first[3])
    # and every row is tied to the kernel of the same start in the kernels table
    assert a100.sql("""SELECT count(*) FROM comms c JOIN kernels k
                       ON k.start_ns = c.start_ns AND k.kind = 'communication'""")[0][0] == 21


def test_older_nccl_traces_take_the_collective_from_the_nccl_span(sampled):
    rows = sampled.sql("""SELECT rank, collective, count(*) FROM comms
                          GROUP BY ALL ORDER BY ALL""")
    assert {(c, n) for r, c, n in rows if r == 0} == {
        ("all_reduce", 4), ("all_to_all", 4), ("all_gather", 2)}
    # an all_to_all of 419430400 unsigned chars
    assert sampled.sql("SELECT max(in_bytes) FROM comms WHERE collective = 'all_to_all'")[0][0] \
        == 419430400


# HTA 0.5.0 get_comm_comp_overlap() (default include_last_profiler_step=False), comp_comm_overlap_pctg
_HTA_OVERLAP = {"hta_a100_2rank_nccl_r0": {0: 14.31}, "hta_sampled_2rank_nccl": {0: 11.81, 1: 20.05}}


@pytest.mark.parametrize("which", sorted(_HTA_OVERLAP))
def test_overlap_matches_hta_within_half_a_point(which, a100, sampled):
    run = a100 if which.startswith("hta_a100") else sampled
    got = {o.rank: o.overlap_pct for o in comm_overlap(run.con, by_step=False)}
    assert got.keys() == _HTA_OVERLAP[which].keys()
    for rank, ref in _HTA_OVERLAP[which].items():
        assert got[rank] == pytest.approx(ref, abs=0.5), rank


@pytest.mark.parametrize("which", sorted(_HTA_OVERLAP))
def test_overlap_equals_hta_on_its_microsecond_view(which, a100, sampled):
    """With HTA's rounding of timestamps to whole microseconds, HTA's numbers exactly."""
    run = a100 if which.startswith("hta_a100") else sampled
    got = {o.rank: round(o.overlap_pct, 2) for o in comm_overlap(hta_rounded(run), by_step=False)}
    assert got == _HTA_OVERLAP[which]


def test_overlap_per_step_adds_up(a100):
    per_step = comm_overlap(a100.con, by_step=True)
    assert [o.step for o in per_step] == [4, 5]  # the last step's launches are left out (HTA)
    for o in per_step:
        assert 0 < o.overlap_ns < o.comm_ns and o.exposed_ns == o.comm_ns - o.overlap_ns


def _con(comms: list[dict], ops: list[dict] = ()):
    con = duckdb.connect()
    for table, rows in ((COMMS, comms), (OPS, list(ops))):
        con.register(table.name, table.build({c: [r.get(c) for r in rows]
                                              for c in table.column_names}))
    return con


def _c(rank, step, start, dur=1000, call=None, source="nccl_kernel", coll="all_reduce"):
    return {"rank": rank, "step": step, "collective": coll, "group": "0", "start_ns": start, "dur_ns": dur,
                "call_ns": call, "source": source}


def test_skew_names_the_late_rank_and_the_wait():
    # GIVEN 3 ranks, 2 steps, 2 all-reduces per step; rank 2 arrives 5 ms late, rank 1 1 ms
    rows = []
    for step in (1, 2):
        for k in (0, 1):
            t = step * 10**9 + k * 10**8
            rows += [_c(0, step, t), _c(1, step, t + 10**6), _c(2, step, t + 5 * 10**6)]
    con = _con(rows)
    # WHEN skew is computed
    by_rank = {s.rank: s for s in rank_skew(con, {})}
    # THEN rank 2 was last every time, 4 ms behind rank 1 per step (max over the step's calls)
    assert by_rank[2].times_last == 4 and by_rank[2].gap_caused_ns == 2 * 4 * 10**6
    assert by_rank[0].wait_ns == 2 * 5 * 10**6 and by_rank[2].wait_ns == 0
    top = collective_skew(con, {}, limit=1)[0]
    assert (top["skew_ns"], top["last_rank"], top["ranks"]) == (5 * 10**6, 2, 3)


def test_gloo_arrival_is_the_call_and_other_hosts_are_shifted():
    # gloo: the worker may start late; the call says when the rank arrived
    con = _con([_c(0, 1, 100, call=50, source="gloo"), _c(1, 1, 100, call=90, source="gloo")])
    assert {s.rank: s.wait_ns for s in rank_skew(con, {})} == {0: 40, 1: 0}
    # a rank on another host whose clock runs 60 ns ahead arrived first in truth
    meta = {"clock": {"ranks": {"0": {"host": "a", "offset_ns": 0},
                                "1": {"host": "b", "offset_ns": 60}}}}
    assert offsets_sql(meta) == "(1, 60)"
    assert {s.rank: s.wait_ns for s in rank_skew(con, meta)} == {0: 0, 1: 20}
    # on the same host the measured offset is noise and is not applied
    same = {"clock": {"ranks": {"0": {"host": "a"}, "1": {"host": "a", "offset_ns": 60}}}}
    assert offsets_sql(same) == "(-1, 0)"


def _record(run: RunDir, rank: int, rec: dict) -> None:
    d = run.raw_dir(rank)
    (d / SESSION_FILE).write_bytes(orjson.dumps({"rank": rank, **rec}))


def test_merge_marks_the_run_partial_with_each_ranks_reason(tmp_path):
    # GIVEN 4 ranks: 0 finished, 1 killed mid-run, 2 raised, 3 never started
    run = RunDir.create(tmp_path / "run")
    _record(run, 0, {"status": "finished", "exit_status": 0, "backend": "gloo",
                     "boundaries_ns": [1, 2], "windows": [], "source": "optimizer",
                     "clock": {"host": "h", "offset_ns": 0}})
    _record(run, 1, {"status": "running", "clock": {"host": "h", "offset_ns": 1500}})
    _record(run, 2, {"status": "finished", "exit_status": 1, "exit_reason": "exception"})
    # WHEN merged with what the launcher saw
    m = merge_ranks(run, 4, {1: -9, 2: 1, 3: 1})
    # THEN
    assert m["partial"] and m["ranks"] == [0, 1, 2] and m["backend"] == "gloo"
    why = m["rank_failures"]
    assert sorted(why) == ["1", "2", "3"]
    assert "killed by SIGKILL" in why["1"] and "died mid-run" in why["1"]
    assert "exit status 1 (exception)" in why["2"]
    assert "never started" in why["3"]
    assert m["clock"]["rank_offsets_ns"] == {"0": 0, "1": 1500}
    assert m["steps_recorded"] == 2


def test_merge_of_a_healthy_run_is_not_partial(tmp_path):
    run = RunDir.create(tmp_path / "run")
    for r in (0, 1):
        _record(run, r, {"status": "finished", "exit_status": 0})
    m = merge_ranks(run, 2)
    assert not m["partial"] and m["rank_failures"] == {} and m["ranks"] == [0, 1]


def test_ranks_interrupted_together_have_no_first_and_a_peer_closing_on_them_comes_after(
        tmp_path):
    run = RunDir.create(tmp_path / "run")
    stopped = {"status": "finished", "exit_status": 0, "exit_reason": "interrupt"}
    # GIVEN two ranks a SIGINT stopped (their parent died)
    for r in (0, 1):
        _record(run, r, {**stopped, "end_ns": 1_000 + r})
    # THEN neither is said to have failed first, nor after the other
    m = merge_ranks(run, 2)
    assert m["first_failure"] is None
    assert all(why.startswith("interrupted by SIGINT") and "after rank" not in why
               for why in m["rank_failures"].values()), m["rank_failures"]
    # GIVEN rank 0 in a collective instead, its peer's exit raising there before its SIGINT
    _record(run, 0, {"status": "finished", "exit_status": 1, "exit_reason": "exception",
                     "exit_error": "RuntimeError", "end_ns": 2_000})
    m = merge_ranks(run, 2)
    # THEN rank 0 failed after rank 1, the one interrupted first
    assert m["first_failure"]["rank"] == 1
    assert m["rank_failures"]["0"] == ("the script failed: exit status 1 (exception "
                                       "RuntimeError); after rank 1 failed")


def test_a_rank_whose_session_could_not_start_ran_unprofiled_and_did_not_die(tmp_path):
    run = RunDir.create(tmp_path / "run")
    _record(run, 0, {"status": "finished", "exit_status": 0})
    # GIVEN rank 1 with no record, its log saying its session did not start; rank 2 with
    # nothing but its log
    unstarted = ("ERROR dsprof: the dsprof session did not start (AttributeError: x); the "
                 "script runs unprofiled\n")
    for r, line in ((1, unstarted), (2, "INFO dsprof: starting\n")):
        (run.path / "raw" / f"rank{r}").mkdir(parents=True)
        (run.path / "raw" / f"rank{r}" / "dsprof.log").write_text(line)
    m = merge_ranks(run, 3)
    why = m["rank_failures"]
    # THEN rank 1 is said to be unprofiled, not dead, and did not fail first
    assert why["1"] == ("not profiled: its dsprof session could not start "
                        "(raw/rank1/dsprof.log says why)")
    assert why["2"] == "died before saving anything"
    assert m["first_failure"]["rank"] == 2
    # AND alone, nothing failed first
    (run.path / "raw" / "rank2" / "dsprof.log").unlink()
    (run.path / "raw" / "rank2").rmdir()
    m = merge_ranks(run, 2)
    assert m["first_failure"] is None and list(m["rank_failures"]) == ["1"]


def test_a_rank_that_finished_after_the_merge_is_merged_again_before_the_ingest(tmp_path):
    run = RunDir.create(tmp_path / "run")
    # GIVEN a merge that found rank 1 still running (a SIGTERM'd coordinator waits 3 s) and
    # rank 2 failing first, and rank 1 then saved as interrupted, rank 3 as ending well
    run.write_meta({"rank_failures": {"1": STILL_RUNNING, "2": "the script failed: exit status "
                                      "1 (exception ValueError)", "3": STILL_RUNNING},
                    "first_failure": {"rank": 2, "why": "the script failed"}, "partial": True})
    interrupted = {"status": "finished", "exit_status": 0, "exit_reason": "interrupt"}
    _record(run, 1, interrupted)
    _record(run, 3, {"status": "finished", "exit_status": 0, "exit_reason": "exit"})
    # WHEN the run is about to be ingested
    refresh_late_ranks(run)
    # THEN meta says what the records say now, as the steps the ingest reads from them will
    m = run.read_meta()
    assert m["rank_failures"] == {
        "1": "interrupted by SIGINT mid-script (its process exited 0, as torch.multiprocessing's "
             "do)",
        "2": "the script failed: exit status 1 (exception ValueError)"}
    assert m["partial"] and m["first_failure"]["rank"] == 2
    # AND a first failure that ended well after all leaves no "after" behind
    run.write_meta({"rank_failures": {"0": STILL_RUNNING, "1": "the script failed: exit "
                                      "status 1 (exception X); after rank 0 failed"},
                    "first_failure": {"rank": 0, "why": STILL_RUNNING}, "partial": True})
    _record(run, 0, {"status": "finished", "exit_status": 0, "exit_reason": "exit"})
    refresh_late_ranks(run)
    m = run.read_meta()
    assert m["rank_failures"] == {"1": "the script failed: exit status 1 (exception X)"}
    assert m["first_failure"] is None


def test_loading_a_run_with_a_late_rank_gives_meta_and_steps_one_answer(tmp_path):
    # GIVEN a 2-rank run merged with rank 1 still running, which then saved its 3 steps
    run = RunDir.create(tmp_path / "run")
    run.write_meta({"source": "run", "status": "finished", "world_size": 2, "ranks": [0, 1],
                    "rank_failures": {"1": STILL_RUNNING}, "partial": True,
                    "first_failure": {"rank": 1, "why": STILL_RUNNING}})
    for r in (0, 1):
        _record(run, r, {"status": "finished", "exit_status": 0, "exit_reason": "exit",
                         "source": "optimizer", "boundaries_ns": [1000, 2000, 3000],
                         "start_ns": 0})
    # WHEN it is loaded (and so ingested) THEN its steps are in, and meta no longer says
    # rank 1 has none
    with load(run.path) as loaded:
        assert loaded.sql("SELECT rank, count(*) FROM steps GROUP BY rank ORDER BY rank") == [
            (0, 3), (1, 3)]
        assert (loaded.meta["rank_failures"], loaded.meta["partial"],
                loaded.meta["first_failure"]) == ({}, False, None)


def test_data_parallel_is_found_and_distributed_data_parallel_is_not():
    def run_of(*ops):
        cols = ("id", "name", "start_ns", "dur_ns", "parent_id")
        return Run.from_tables(
            meta={"target": {"kind": "script", "name": "t.py", "argv": ["t.py"]}},
            ops={**{c: [o[i] for o in ops] for i, c in enumerate(cols)},
                 "step": [1] * len(ops), "cat": ["module"] * len(ops)})

    dp = run_of((1, "DataParallel", 0, 10_000_000, None),
                (2, "DataParallel.module", 2_000_000, 7_000_000, 1))
    (f,) = DataParallelAnalyzer().run(Context(dp))
    assert f.kind == "comm.data_parallel" and "DistributedDataParallel" in f.title
    assert f.saving_s == pytest.approx(3e-3)  # the wrapper's own 3 ms
    ddp = run_of((1, "DistributedDataParallel", 0, 10, None), (2, "Model", 0, 5, None))
    assert DataParallelAnalyzer().run(Context(ddp)) == []


def test_gloo_trace_from_a_300_rank_job(tmp_path):
    # GIVEN HTA's CPU-only gloo trace (rank 34 of 300, ten process groups, all of size 300)
    run, _ = import_traces([trace_dir("hta_cpu_only_gloo")], tmp_path / "run")
    with load(run.path) as r:
        rows = r.sql("""SELECT collective, dtype, count(*), min(group_size), count("group"),
                        bool_and(abs(busbw_gbps - algbw_gbps * 2 * 299 / 300) < 1e-9),
                        list(DISTINCT in_bytes ORDER BY in_bytes)
                        FROM comms GROUP BY ALL""")
    # THEN every gloo:all_reduce span is a row sized by its dims, the group ambiguous but its size not
    assert rows == [("all_reduce", "float", 10, 300, 0, True, [1285084, 8329644])]


def test_a_rank_alive_but_unfinished_is_named_late_not_dead(tmp_path):
    # GIVEN rank 1's record says running and its process (this test's) is alive on this host,
    # rank 2's says running and its pid is of a process that has ended
    import os
    import socket
    import subprocess
    import sys
    import time

    from dsprof.ranks import wait_for_ranks

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    host = socket.gethostname()
    run = RunDir.create(tmp_path / "run")
    _record(run, 0, {"status": "finished", "exit_status": 0})
    _record(run, 1, {"status": "running", "pid": os.getpid(), "host": host})
    _record(run, 2, {"status": "running", "pid": int(gone.stdout), "host": host})
    # WHEN the ranks are waited for (briefly) and merged
    t0 = time.monotonic()
    waiting = wait_for_ranks(run, 3, timeout_s=0.5)
    m = merge_ranks(run, 3)
    # THEN only the live rank is waited for (the dead one ended), and each reason says which
    assert waiting == [1] and time.monotonic() - t0 >= 0.5
    assert "still running" in m["rank_failures"]["1"]
    assert "died mid-run" in m["rank_failures"]["2"]
    # a finished job is not waited for at all
    _record(run, 1, {"status": "finished", "exit_status": 0})
    t0 = time.monotonic()
    assert wait_for_ranks(run, 3, timeout_s=30) == [] and time.monotonic() - t0 < 5
