"""Which rank failed first when one rank is killed outright and the others fail because of it
(dsprof.peer_loss, dsprof.ranks.merge_ranks). The real gloo case is
tests/integration/test_ranks.py's killed rank."""

from __future__ import annotations

import signal

import orjson
import pytest

from dsprof.late_ranks import merge_orphaned_ranks
from dsprof.peer_loss import lost_a_peer
from dsprof.ranks import merge_ranks
from dsprof.rundir import SESSION_FILE, RunDir

# gloo's texts: the first as torch 2.13 raised it in a rank whose peer was SIGKILLed (the
# killed-rank integration test's run), the others put together from the pieces in
# libtorch_cpu.so's strings ("Connection closed by peer ", "Timed out waiting ", "ms for recv
# operation to complete")
GLOO_RESET = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read "
              "error [127.0.0.1]:9925: Connection reset by peer. This is typically caused by a "
              "remote worker hanging or bugs in the application. Check the logs of the remote "
              "worker before reporting an error.")
GLOO_CLOSED = ("[../third_party/gloo/gloo/transport/tcp/pair.cc:598] Connection closed by "
               "peer [127.0.0.1]:41235")
GLOO_TIMEOUT = ("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out "
                "waiting 1800000ms for recv operation to complete")


def _record(run: RunDir, rank: int, rec: dict) -> None:
    (run.raw_dir(rank) / SESSION_FILE).write_bytes(orjson.dumps({"rank": rank, **rec}))


def _raised(end_ns: int, peer_lost: bool = False, error: str = "RuntimeError") -> dict:
    return {"status": "finished", "exit_status": 1, "exit_reason": "exception",
            "exit_error": error, "end_ns": end_ns,
            **({"exit_peer_lost": True} if peer_lost else {})}


def test_a_backends_peer_gone_error_is_a_lost_peer_and_a_timeout_is_not():
    assert lost_a_peer(RuntimeError(GLOO_RESET))
    assert lost_a_peer(RuntimeError(GLOO_CLOSED))
    # a framework that wraps the collective's error still lost its peer
    try:
        try:
            raise RuntimeError(GLOO_CLOSED)
        except RuntimeError as exc:
            raise ValueError("training step failed") from exc
    except ValueError as wrapped:
        assert lost_a_peer(wrapped)
    # the peer may be alive and stuck: the rank that timed out is the one that failed
    assert not lost_a_peer(RuntimeError(GLOO_TIMEOUT))
    assert not lost_a_peer(ValueError("loss is nan at step 4"))


def test_an_exception_that_cannot_print_or_loops_is_no_lost_peer():
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise TypeError("no")

    assert not lost_a_peer(Unprintable())
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert not lost_a_peer(a)


def test_a_rank_killed_outright_failed_first_not_the_ranks_that_lost_it(tmp_path):
    # GIVEN rank 3 killed by SIGKILL mid-run (no end of its own), ranks 0 and 2 failing in
    # their all-reduce with "Connection reset by peer", rank 1 stopped by the launcher's
    # SIGTERM; the launcher's pick (its error files' timestamps, by the second) is rank 2
    run = RunDir.create(tmp_path / "run")
    _record(run, 0, _raised(2_000, peer_lost=True))
    _record(run, 1, {"status": "finished", "exit_status": 143, "exit_reason": "exit",
                     "end_ns": 1_000})
    _record(run, 2, _raised(1_500, peer_lost=True))
    _record(run, 3, {"status": "running"})
    m = merge_ranks(run, 4, {0: 1, 1: 1, 2: 1, 3: -signal.SIGKILL}, launcher_first=2)
    # THEN rank 3 failed first, and every other rank after it
    assert m["first_failure"]["rank"] == 3, m["rank_failures"]
    assert "killed by SIGKILL" in m["first_failure"]["why"]
    assert all(m["rank_failures"][r].endswith("; after rank 3 failed") for r in "012")


def test_a_rank_that_raised_its_own_error_failed_first_even_with_a_later_clock(tmp_path):
    # GIVEN rank 1 raising a ValueError, rank 0 losing it in its all-reduce, whose end its
    # clock puts earlier
    run = RunDir.create(tmp_path / "run")
    _record(run, 0, _raised(1_000, peer_lost=True))
    _record(run, 1, _raised(1_200, error="ValueError"))
    m = merge_ranks(run, 2)
    # THEN rank 1 failed first
    assert m["first_failure"]["rank"] == 1
    assert m["rank_failures"]["0"].endswith("; after rank 1 failed")


def test_where_every_failure_followed_another_the_earliest_end_is_first(tmp_path):
    # GIVEN two ranks that each lost the other (no other failure to blame)
    run = RunDir.create(tmp_path / "run")
    _record(run, 0, _raised(2_000, peer_lost=True))
    _record(run, 1, _raised(1_000, peer_lost=True))
    m = merge_ranks(run, 2)
    # THEN the rule is the earliest end, as before
    assert m["first_failure"]["rank"] == 1


def test_a_rank_torch_stopped_with_sigterm_before_it_saved_did_not_fail_first(tmp_path):
    # GIVEN rank 0 raising its own error, rank 1 SIGTERMed by the launcher before it saved
    run = RunDir.create(tmp_path / "run")
    _record(run, 0, _raised(5_000, error="ValueError"))
    _record(run, 1, {"status": "running"})
    m = merge_ranks(run, 2, {0: 1, 1: -signal.SIGTERM}, launcher_first=1)
    # THEN rank 0 failed first, and the launcher's pick of rank 1 is not taken
    assert m["first_failure"]["rank"] == 0


def test_ranks_killed_together_have_no_first(tmp_path):
    # GIVEN three ranks killed at once, none with an end, no launcher to say more (their
    # launcher was killed, and the first read merges them)
    run = RunDir.create(tmp_path / "run")
    for r in range(3):
        _record(run, r, {"status": "running"})
    m = merge_ranks(run, 3)
    # THEN none is named first, and none said to come after another
    assert m["first_failure"] is None
    assert all("died mid-run" in w and "after rank" not in w for w in m["rank_failures"].values())


@pytest.mark.parametrize("world", [10**9, True, "3", None, 1])
def test_an_orphaned_run_with_an_odd_world_size_is_left_as_it_is(tmp_path, world):
    # GIVEN a run whose meta.json still says running, with a world size no job has
    run = RunDir.create(tmp_path / "run")
    run.write_meta({"source": "run", "status": "running", "world_size": world})
    _record(run, 0, {"status": "running"})
    merge_orphaned_ranks(run)
    # THEN nothing is merged (and a billion ranks are not looked for)
    assert "rank_failures" not in run.read_meta()


def test_an_orphaned_run_is_merged_once(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.write_meta({"source": "run", "status": "running", "world_size": 2})
    _record(run, 0, {"status": "running"})
    _record(run, 1, _raised(1_000, peer_lost=True))
    merge_orphaned_ranks(run)
    m = run.read_meta()
    assert (m["status"], m["coordinator_lost"], m["first_failure"]["rank"]) == ("running", True,
                                                                                0)
    assert "end_time" not in m
    # a second read finds it merged and leaves it
    run.update_meta(first_failure={"rank": 5, "why": "marker"})
    merge_orphaned_ranks(run)
    assert run.read_meta()["first_failure"]["rank"] == 5


def test_a_run_merged_after_its_coordinator_died_says_how_its_ranks_ended(tmp_path):
    # GIVEN a real import, marked as a run whose coordinator was killed after every rank
    # finished (no failures), then as one where a rank died
    from dsprof.ingest.importer import import_traces
    from dsprof.reports.summary import summarize
    from dsprof.run import load
    from tests.conftest import trace_dir

    if not trace_dir("hta_sampled_2rank_nccl").exists():
        pytest.skip("../shared/traces is absent")
    rd, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")], tmp_path / "run")
    for failures, said in (({}, "each rank's own record says it finished"),
                           ({"1": "died mid-run"}, "each failed rank's line below says")):
        rd.update_meta(source="run", status="running", coordinator_lost=True,
                       rank_failures=failures)
        with load(rd.path) as run:
            notes = " ".join(summarize(run).notes)
        # THEN the summary says the coordinator ended without recording the end, and how the
        # ranks ended
        assert "the process that coordinated its ranks ended" in notes and said in notes
