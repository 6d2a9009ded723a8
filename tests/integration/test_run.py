"""``dsprof run`` end to end on real torch (CPU): steps, windows, tables, exit statuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dsprof.analyzers.registry import Context
from dsprof.run import load
from tests.integration.helpers import dsprof, meta, write
from tests.integration.scripts import MANUAL_STEPS, NO_STEPS, TINY_TRAIN

SCHEDULE = ["--wait", "1", "--warmup", "1", "--active", "2"]


@pytest.fixture
def tiny(tmp_path):
    return write(tmp_path / "tiny_train.py", TINY_TRAIN)


def test_run_times_every_step_and_records_one_window(tmp_path, tiny):
    # GIVEN a training script with 8 optimizer steps
    out = tmp_path / "run"
    # WHEN profiled with wait=1 warmup=1 active=2
    res = dsprof("run", "-o", str(out), *SCHEDULE, str(tiny), env={"TINY_STEPS": "8"})
    # THEN the script ran normally and dsprof summarized it
    assert res.code == 0, res.stderr
    assert "trained 8 steps" in res.stdout
    assert f"dsprof summary {out}" in res.stderr
    # AND its closing lines point at analyze and the dashboard too
    assert f"dsprof analyze {out}" in res.stderr and f"dsprof dashboard {out}" in res.stderr
    assert "none ran at full speed" not in res.stderr  # full-speed steps, said plainly
    # AND no line per step reaches the terminal the script writes to (its own progress bars);
    # the per-step lines are in the run's log
    assert "step 3: " not in res.stderr
    assert "step 3: " in (out / "dsprof.log").read_text()
    with load(out) as run:
        steps = run.sql("SELECT step, profiled, source FROM steps ORDER BY step")
        # every step is timed; steps 3 and 4 are the window (step 0 is the bootstrap, 1 waits,
        # 2 warms up)
        assert [s for s, _, _ in steps] == list(range(8))
        assert [s for s, p, _ in steps if p] == [3, 4]
        assert {src for _, _, src in steps} == {"optimizer"}
        # each step's CPU time of the stepping thread is measured and fits in its wall time
        n_cpu, fits = run.sql("SELECT count(cpu_ns), bool_and(cpu_ns > 0 AND "
                              "cpu_ns <= dur_ns + 1000000) FROM steps")[0]
        assert n_cpu == 8 and fits
        op_steps = {s for (s,) in run.sql("SELECT DISTINCT step FROM ops WHERE step IS NOT NULL")}
        assert op_steps == {3, 4}
        # ops carry module paths (qualified names) and phases
        modules = {m for (m,) in run.sql("SELECT DISTINCT module FROM ops WHERE module IS NOT NULL")}
        assert {"Tiny", "Tiny.body", "Tiny.body.0", "Tiny.body.2"} <= modules
        phases = {p for (p,) in run.sql("SELECT DISTINCT phase FROM ops")}
        assert {"forward", "backward", "optimizer"} <= phases
        bwd_mods = {m for (m,) in run.sql(
            "SELECT DISTINCT module FROM ops WHERE phase = 'backward' AND module IS NOT NULL")}
        assert "Tiny.body.0" in bwd_mods
        flops = run.sql("SELECT sum(flops) FROM ops WHERE name = 'aten::addmm' AND step = 3")[0][0]
        # forward Linear(32,64) and Linear(64,4) on a batch of 16: 2*16*(32*64 + 64*4)
        assert flops == 2 * 16 * (32 * 64 + 64 * 4)
        assert run.has("memory")
    m = meta(out)
    assert m["exit_status"] == 0 and m["status"] == "finished"
    assert m["windows"][0]["steps"] == [3, 4]
    assert (out / "dsprof.log").read_text().count("step ") >= 8


def test_script_sees_what_python_would_show(tmp_path, tiny):
    # GIVEN the facts a script sees when run by plain python
    import subprocess
    plain = tmp_path / "plain.json"
    subprocess.run([sys.executable, str(tiny), "--lr", "3"], check=True, capture_output=True,
                   env={"TINY_STEPS": "1", "TINY_FACTS": str(plain), "PATH": "/usr/bin"})
    # WHEN the same script runs under dsprof
    under = tmp_path / "under.json"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "run"), str(tiny), "--lr", "3",
                 env={"TINY_STEPS": "1", "TINY_FACTS": str(under)})
    # THEN argv, __name__, sys.path[0] and __file__ are the same
    assert res.code == 0, res.stderr
    assert json.loads(under.read_text()) == json.loads(plain.read_text())


@pytest.mark.parametrize("how, code, reason", [
    ("exit", 3, "exit"), ("raise", 1, "exception"), ("interrupt", 130, "interrupt"),
    ("sigterm", 143, "exit")])
def test_exit_status_is_the_scripts_and_the_run_is_saved(tmp_path, tiny, how, code, reason):
    # GIVEN a script that ends badly inside the profiled window (step 3)
    out = tmp_path / "run"
    # WHEN run under dsprof
    res = dsprof("run", "-o", str(out), *SCHEDULE, str(tiny),
                 env={"TINY_STEPS": "8", "TINY_FAIL_AT": "4", "TINY_FAIL_HOW": how})
    # THEN dsprof exits with the script's status (Ctrl-C: as the plain interpreter ends,
    # which test_interrupted_runs.py compares; 130 is the status the run records)
    assert res.code == code or how == "interrupt", res.stderr
    m = meta(out)
    assert m["status"] == "finished" and m["exit_status"] == code and m["exit_reason"] == reason
    # and what was collected is saved and readable: 4 timed steps, the cut window
    with load(out) as run:
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 4
        assert run.sql("SELECT count(*) FROM ops WHERE step = 3")[0][0] > 0
        assert run.sql("SELECT count(*) FROM ops WHERE step = 4")[0][0] > 0
    # and dsprof's lines after the script's say how it ended, and what they cover
    said = {"exit": "the script exited (exit status 3)",
            "raise": "the script raised ValueError (exit status 1)",
            "interrupt": "the script was interrupted (Ctrl-C)",
            "sigterm": "the script exited (exit status 143)"}[how]
    assert said + ": the report covers what it ran until then" in " ".join(res.stderr.split())
    if how == "raise":
        # the user's traceback, without dsprof's frames
        assert "ValueError: boom at step 4" in res.stderr
        assert "tiny_train.py" in res.stderr
        assert "dsprof/launch.py" not in res.stderr and "runpy" not in res.stderr
    if how == "interrupt":
        assert "KeyboardInterrupt" in res.stderr


def test_run_module_with_dash_m(tmp_path):
    # GIVEN a package module that records its argv
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    write(pkg / "__init__.py", "")
    write(pkg / "train.py", "import sys, json\nif __name__ == '__main__':\n"
          "    json.dump(sys.argv, open(sys.argv[-1], 'w'))\n")
    facts = tmp_path / "argv.json"
    # WHEN run as `dsprof run -m mypkg.train ARGS`
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "run"), "-m", "mypkg.train",
                 "--x", str(facts), cwd=tmp_path)
    # THEN it ran as `python -m` would run it
    assert res.code == 0, res.stderr
    argv = json.loads(facts.read_text())
    assert argv[0].endswith("mypkg/train.py") and argv[1:] == ["--x", str(facts)]


def test_manual_steps_for_inference(tmp_path):
    # GIVEN an inference loop with no optimizer, marking steps with dsprof.step()
    script = write(tmp_path / "infer.py", MANUAL_STEPS)
    out = tmp_path / "run"
    # WHEN profiled
    res = dsprof("run", "-o", str(out), "--wait", "0", "--warmup", "0", "--active", "2",
                 str(script), env={"PYTHONPATH": str(__import__("pathlib").Path(
                     __file__).resolve().parents[2])})
    # THEN the hand-marked boundaries are the steps
    assert res.code == 0, res.stderr
    with load(out) as run:
        rows = run.sql("SELECT step, profiled, source FROM steps ORDER BY step")
    assert [r[0] for r in rows] == list(range(6))
    assert {r[2] for r in rows} == {"manual"}
    # with --wait 0 the warmup is at least one step (see window_schedule.effective_warmup)
    assert [r[0] for r in rows if r[1]] == [2, 3]


def test_no_steps_captures_the_whole_run_up_to_the_cap(tmp_path):
    # GIVEN a script that never steps an optimizer nor calls dsprof.step(), running ~3 s
    script = write(tmp_path / "loop.py", NO_STEPS)
    out = tmp_path / "run"
    # WHEN profiled with a 1 s cap
    res = dsprof("run", "-o", str(out), "--max-capture", "1", str(script), "3")
    # THEN the capture is one step, cut at the cap, and the summary says so
    assert res.code == 0, res.stderr
    m = meta(out)
    assert m["steps_source"] == "none" and m["capped"] is True
    with load(out) as run:
        (n_steps,) = run.sql("SELECT count(*) FROM steps")[0]
        span = run.sql("SELECT (max(start_ns + dur_ns) - min(start_ns)) / 1e9 FROM ops")[0][0]
        # so its analyzers' figures are of that one step (only an import marks none)
        words = Context(run).words
    assert n_steps == 1
    assert words.has_steps and words.per_step == "per step"
    assert 0.5 < span < 2.0
    assert "no step boundaries" in res.stderr


def test_no_analyze_then_summary_ingests_later(tmp_path, tiny):
    # GIVEN a run recorded with --no-analyze (DSPROF_ANALYZE=0 is the same knob)
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), *SCHEDULE, str(tiny), env={"DSPROF_ANALYZE": "0"})
    assert res.code == 0, res.stderr
    assert not (out / "tables").exists()
    # WHEN summarized
    res = dsprof("summary", "--json", str(out))
    # THEN the raw data was ingested and the summary is one JSON document
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    # 8 steps: step time counts the full-speed ones only (not setup, first calls, the
    # profiled window, its warm-up or the step that wrote its trace: dsprof/facts.py)
    assert doc["steps"]["count"] + len(doc["steps"]["excluded"]) == 8
    assert doc["steps"]["rule"] == "full-speed steps" and doc["steps"]["count"] == 2
    assert doc["profiled_steps"] == 2
    assert {p["phase"] for p in doc["phases"]} >= {"forward", "backward", "optimizer"}
    assert abs(sum(p["percent"] for p in doc["phases"]) - 100) < 1e-6
    assert doc["top_ops"][0]["count"] > 0
    assert (out / "tables" / "ops" / "rank0.parquet").exists()


def test_env_twins_configure_the_run(tmp_path, tiny):
    # GIVEN the schedule and output only in the environment
    out = tmp_path / "from-env"
    env = {"DSPROF_OUTPUT": str(out), "DSPROF_WAIT": "0", "DSPROF_WARMUP": "0",
           "DSPROF_ACTIVE": "1", "DSPROF_REPEAT": "2", "DSPROF_QUIET": "1", "TINY_STEPS": "6"}
    # WHEN run with no flags
    res = dsprof("run", str(tiny), env=env)
    # THEN they took effect: two one-step windows (a step apart: wait 0 means warmup 1),
    # nothing printed
    assert res.code == 0, res.stderr
    assert [w["steps"] for w in meta(out)["windows"]] == [[2], [4]]
    assert "dsprof" not in res.stderr  # (torch's own C++ warnings may still appear)


def test_debug_level_logs_collector_actions_and_ops(tmp_path, tiny):
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), *SCHEDULE, str(tiny), env={"DS_LOG_LEVEL": "debug"})
    assert res.code == 0, res.stderr
    assert "timeline: recording from step 3" in res.stderr
    assert "op aten.addmm.default in=[" in res.stderr and "module=Tiny.body.0" in res.stderr
    assert "op aten.addmm.default" in (out / "dsprof.log").read_text()


def test_bad_log_level_is_reported_once_and_info_used(tmp_path, tiny):
    res = dsprof("run", "-o", str(tmp_path / "run"), str(tiny), env={"DS_LOG_LEVEL": "LOUD",
                                                                     "TINY_STEPS": "3"})
    assert res.code == 0
    assert res.stderr.count("DS_LOG_LEVEL='LOUD' is not a level") == 1
    # INFO is in force: its per-step lines are in the run's log (not on the terminal), and
    # DEBUG's collector lines appear nowhere
    assert "step 1:" in (tmp_path / "run" / "dsprof.log").read_text()
    assert "[dsprof INFO]" in res.stderr and "timeline:" not in res.stderr


def test_with_stack_records_python_events_in_the_raw_trace(tmp_path, tiny):
    # GIVEN --with-stack (off by default: module names come from dsprof's own annotations)
    out_on, out_off = tmp_path / "on", tmp_path / "off"
    for out, extra in ((out_on, ["--with-stack"]), (out_off, [])):
        res = dsprof("run", "-q", "--no-analyze", "-o", str(out), *SCHEDULE, *extra, str(tiny))
        assert res.code == 0, res.stderr
    # THEN only the first raw trace has Python function events, and both have module paths
    on = (out_on / "raw" / "rank0" / "window-0.trace.json").read_text()
    off = (out_off / "raw" / "rank0" / "window-0.trace.json").read_text()
    assert '"python_function"' in on and '"python_function"' not in off
    for out in (out_on, out_off):
        with load(out) as run:
            mods = {m for (m,) in run.sql("SELECT DISTINCT module FROM ops")}
        assert "Tiny.body.0" in mods


def test_a_killed_run_keeps_its_closed_windows(tmp_path, tiny):
    # GIVEN a script killed outright (SIGKILL, as the OOM killer does) after its window closed
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), *SCHEDULE, str(tiny),
                 env={"TINY_STEPS": "8", "TINY_FAIL_AT": "6", "TINY_FAIL_HOW": "sigkill"})
    assert res.code == -9
    # WHEN summarized afterwards
    res = dsprof("summary", "--json", str(out))
    # THEN the saved window is there, with its steps, and the summary says the run was cut
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["profiled_steps"] == 2
    assert doc["steps"]["count"] == 2
    assert any("did not finish" in n for n in doc["notes"])


def test_a_run_killed_before_it_saved_anything_says_so_when_read(tmp_path, tiny):
    # GIVEN a script killed outright after 3 steps, before its profiled window (steps 6-8)
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), "--wait", "5", str(tiny),
                 env={"TINY_STEPS": "10", "TINY_FAIL_AT": "3", "TINY_FAIL_HOW": "sigkill"})
    assert res.code == -9, res.stderr
    # WHEN it is read: one line that says why it holds nothing, and a non-zero status
    read = dsprof("summary", str(out))
    assert read.code != 0
    line = " ".join(read.stderr.split())
    assert "holds no data: the run ended before it saved any (its process was killed, or " \
           "crashed without Python's exit, after 3 steps" in line, read.stderr
    assert "Traceback" not in read.stderr


WARN_AND_RAISE = """
import inspect, warnings
import torch

print(inspect.getsourcefile(lambda: 0))
warnings.warn("lr too high")
def fail():
    raise ValueError("boom")
fail()
"""


def test_a_script_given_by_a_relative_path_reads_its_own_path_as_without_dsprof(tmp_path):
    # GIVEN a script run by a relative path that prints its source file, warns, then raises
    write(tmp_path / "rel.py", WARN_AND_RAISE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    bare = subprocess.run([sys.executable, "rel.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    res = dsprof("run", "-q", "-o", "run", "rel.py", cwd=tmp_path)
    # THEN the path it sees, its warning's and its traceback's lines are the plain script's
    # (Python compiles a script under its absolute path)
    assert res.code == bare.returncode == 1
    assert res.stdout == bare.stdout and str(tmp_path / "rel.py") in bare.stdout

    def lines(err: str) -> list[str]:
        return [ln for ln in err.splitlines() if "rel.py" in ln or "Error" in ln]

    assert lines(res.stderr) == lines(bare.stderr), res.stderr


def test_a_run_too_short_for_a_full_speed_step_says_which_steps_it_timed(tmp_path, tiny):
    # GIVEN one optimizer step (Lightning's fast_dev_run): its only step holds the setup
    res = dsprof("run", "-o", str(tmp_path / "run"), str(tiny), env={"TINY_STEPS": "1"})
    assert res.code == 0, res.stderr
    # THEN the closing line says its figure is not a full-speed step's (before: "steps: 1
    # timed, median 2,205.4 ms", which read as a step time)
    assert "steps: 1 timed (all steps: none ran at full speed), median" in res.stderr
