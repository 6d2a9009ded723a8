"""``with dsprof.profile(...) as prof``: the same session and run directory as dsprof run,
safe in a notebook."""

from __future__ import annotations

import signal
import sys

import pytest
import torch

import dsprof
from dsprof.errors import ConfigError


def loop(steps: int, mark=None) -> None:
    model = torch.nn.Linear(16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        model(torch.randn(8, 16)).sum().backward()
        opt.step()
        opt.zero_grad()
        if mark is not None:
            mark()


def test_profile_block_writes_a_run_with_its_schedule_and_touches_no_process_state(tmp_path):
    # GIVEN the process state a notebook kernel cares about
    before = (list(sys.argv), signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT),
              sys.modules["__main__"])
    # WHEN a loop is profiled with a schedule
    with dsprof.profile(tmp_path / "run", schedule=dsprof.schedule(wait=1, warmup=1, active=2),
                        quiet=True) as prof:
        loop(6)
    # THEN the run directory is a regular one, with the windows the schedule asked for
    assert prof.path == tmp_path / "run" and (prof.path / "dsprof.log").exists()
    assert prof.run.meta["status"] == "finished" and prof.run.meta["exit_reason"] == "exit"
    assert prof.run.meta["target"]["kind"] == "api"
    assert [s for s, p in prof.run.sql("SELECT step, profiled FROM steps ORDER BY step") if p] \
        == [3, 4]
    assert prof.run.sql("SELECT count(*) FROM ops WHERE step = 3")[0][0] > 0
    assert (prof.path / "findings.json").exists()
    # AND argv, signal handlers and __main__ are as they were
    assert before == (list(sys.argv), signal.getsignal(signal.SIGTERM),
                      signal.getsignal(signal.SIGINT), sys.modules["__main__"])


def test_manual_steps_through_prof_and_dsprof_step(tmp_path):
    with dsprof.profile(tmp_path / "run", schedule={"wait": 0, "active": 1}, quiet=True,
                        analyze=False) as prof:
        model = torch.nn.Linear(4, 4)
        for i in range(4):
            model(torch.randn(2, 4))
            (prof.step if i % 2 else dsprof.step)()
    run = dsprof.load(prof.path)
    assert run.sql("SELECT count(*), min(source) FROM steps") == [(4, "manual")]


def test_an_exception_in_the_block_is_recorded_and_propagates(tmp_path):
    with pytest.raises(ZeroDivisionError), \
            dsprof.profile(tmp_path / "run", quiet=True, analyze=False) as prof:
        loop(2)
        1 / 0  # noqa: B018
    meta = dsprof.load(prof.path).meta
    assert (meta["exit_status"], meta["exit_reason"]) == (1, "exception")


def test_one_session_at_a_time_and_bad_arguments(tmp_path):
    with dsprof.profile(tmp_path / "a", quiet=True, analyze=False), \
            pytest.raises(ConfigError, match="already running"):
        dsprof.profile(tmp_path / "b").__enter__()
    with pytest.raises(ConfigError, match="dsprof.schedule"):
        dsprof.profile(schedule=torch.profiler.schedule(wait=1, warmup=1, active=1))
    with pytest.raises(ConfigError, match="no \\['every'\\]"):
        dsprof.profile(schedule={"every": 3})
    with pytest.raises(ConfigError, match="unknown settings"):
        dsprof.profile(colour="blue")


def test_detect_anomaly_knob_stops_the_block_at_the_first_nan(tmp_path):
    from dsprof.errors import NumericalAnomalyError

    with pytest.raises(NumericalAnomalyError, match="aten.log.default"), \
            dsprof.profile(tmp_path / "run", quiet=True, detect_anomaly=True) as prof:
        torch.log(torch.tensor([1.0, -1.0]))
    row = prof.run.sql("SELECT op, kind, phase FROM anomalies")
    assert row == [("aten.log.default", "nan", "other")]
    from dsprof.analyzers.registry import read_findings

    finding = read_findings(prof.run).findings[0]
    assert finding.kind == "numerics.nonfinite" and "clamp" in finding.fix


def test_profile_twice_with_one_output_gets_a_new_directory(tmp_path):
    # GIVEN a notebook cell that profiles into a fixed directory, run twice in one process
    paths = []
    for _ in range(2):
        with dsprof.profile(tmp_path / "run", schedule={"wait": 0, "active": 1}, quiet=True,
                            analyze=False) as prof:
            loop(2)
        paths.append(prof.path)
    # THEN the second run has its own directory beside the first, and both are complete
    assert paths == [tmp_path / "run", tmp_path / "run-2"]
    assert all(dsprof.load(p).meta["status"] == "finished" for p in paths)
    # AND a directory this process did not make is still refused
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "meta.json").write_text("{}")
    with pytest.raises(Exception, match="theirs"), \
            dsprof.profile(tmp_path / "theirs", quiet=True, analyze=False):
        pass
