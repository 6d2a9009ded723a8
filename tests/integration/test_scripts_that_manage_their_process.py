"""Scripts that manage their own process (issue 19): their own torch.profiler, autograd anomaly
mode, ``sys.exit("message")``, ``atexit``, ``__file__`` after a chdir. Each runs as without
dsprof, and what dsprof reports about it is honest."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.integration.helpers import analyzed_here, dsprof, meta, plain, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

# Profiles itself twice (torch.profiler's schedule with repeat=2, record_function labels), then
# changes directory and reads a file next to it through __file__, registers an atexit writer
# and ends with sys.exit("message"): status 1, the message on stderr.
OWN_PROFILER_TWICE = '''
import atexit, os, sys
import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule
from torch.profiler import tensorboard_trace_handler

logdir, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 32), torch.randint(0, 4, (16,))
atexit.register(lambda: open(out, "w").write("atexit ran"))
with profile(activities=[ProfilerActivity.CPU],
             schedule=schedule(skip_first=2, wait=1, warmup=1, active=3, repeat=2),
             on_trace_ready=tensorboard_trace_handler(logdir)) as prof:
    for step in range(28):
        with record_function("forward"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        prof.step()
os.chdir(sys.argv[3])  # __file__ was given relative to the directory left here
print("next to me:", os.path.isfile(os.path.join(os.path.dirname(__file__), "data.txt")))
sys.exit("stopped after %d steps" % (step + 1))
'''


def _steps(run):
    (table,) = (run / "tables" / "steps").glob("*.parquet")
    return pq.read_table(table).to_pylist()


def _notes(run) -> dict[str, str]:
    res = dsprof("analyze", "--json", str(run))
    assert res.code == 0, res.stderr
    return {n["kind"]: n["text"] for n in json.loads(res.stdout)["notes"]}


def test_the_scripts_own_profiler_twice_is_left_its_steps_and_dsprof_says_so(tmp_path):
    # GIVEN a script that profiles itself over steps 3-12 (two sessions) and exits with a message
    script = write(tmp_path / "own.py", OWN_PROFILER_TWICE)
    write(tmp_path / "data.txt", "x")
    work = tmp_path / "cwd"
    work.mkdir()
    bare = plain(script, str(tmp_path / "tb-plain"), str(tmp_path / "plain.txt"), str(work))
    run = tmp_path / "run"
    res = dsprof("run", "-q", "-o", str(run), script.name, str(tmp_path / "tb"),
                 str(tmp_path / "dsprof.txt"), str(work), cwd=tmp_path)
    # THEN it runs as without dsprof: status 1 with its message, the same output (__file__ is
    # absolute, so the file next to the script is found after the chdir), its atexit file and
    # both of its traces
    assert (bare.returncode, res.code) == (1, 1), res.stderr
    assert bare.stdout == res.stdout == "next to me: True\n"
    assert res.stderr.splitlines()[-1] == bare.stderr.splitlines()[-1] == "stopped after 28 steps"
    assert (tmp_path / "dsprof.txt").read_text() == "atexit ran"
    assert len(list((tmp_path / "tb").glob("*.pt.trace.json"))) == 2
    # AND dsprof stepped aside for both sessions, kept no window cut before a whole step (it
    # used to save one "step 8" of 12 events, which analyzers read as a run with no shapes
    # and no optimizer), and took its window after the script's profiling ended
    m = meta(run)
    assert m["user_profiler"]["steps"] == [[3, 7], [8, 12]]
    windows = [w["steps"] for w in m["windows"]]
    assert len(windows) == 1 and min(windows[0]) > 12, windows
    # AND the steps the script profiled are left out of step times, and the analysis says why
    reasons = {r["step"]: r["disturbed_by"] for r in _steps(run)}
    assert {s for s, r in reasons.items() if r == "user_profiler"} == set(range(3, 13))
    note = _notes(run)["user_profiler"]
    assert "own torch.profiler (2 session(s)) over steps 3-7, 8-12" in note
    assert f"window at steps {', '.join(map(str, windows[0]))}" in note


ANOMALY = '''
import torch
torch.autograd.set_detect_anomaly(True)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.LayerNorm(256), torch.nn.GELU(),
                            torch.nn.Linear(256, 1))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(64, 64), torch.randn(64, 1)
for _ in range(24):
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("anomaly", torch.is_anomaly_enabled())
'''


def test_the_scripts_anomaly_mode_withholds_timing_findings(tmp_path):
    # GIVEN a script that turns on autograd anomaly mode for the whole run
    script = write(tmp_path / "anomaly.py", ANOMALY)
    run = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(run), str(script), cwd=tmp_path)
    assert res.code == 0 and res.stdout == "anomaly True\n", res.stderr
    analyzed_here(run)
    # THEN every step is marked as timing the debugging aid, and no timing finding is ranked
    assert {r["disturbed_by"] for r in _steps(run)[2:]} == {"autograd_anomaly"}
    assert meta(run)["autograd_anomaly"] == meta(run)["steps_recorded"]
    assert "set_detect_anomaly(True)" in _notes(run)["withheld"]
    findings = json.loads((run / "findings.json").read_text())["findings"]
    timed = [f for f in findings if f["saving_s"] > 0 and not f.get("saving_bytes")]
    assert timed and all(f["severity"] == "info" and f["data"].get("withheld") == "autograd_anomaly"
                         for f in timed), [(f["id"], f["severity"]) for f in timed]


# A DataLoader built anew each epoch (persistent_workers=False), its 2 workers slow to start
# (worker_init_fn sleeps 0.8 s, as a spawn worker importing torch takes seconds).
LOADER_PER_EPOCH = '''
import sys, time
import torch
from torch.utils.data import DataLoader, TensorDataset

def slow_start(worker_id):
    time.sleep(0.8)

torch.manual_seed(0)
data = TensorDataset(torch.randn(64, 16), torch.randint(0, 4, (64,)))
model = torch.nn.Linear(16, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(4):
    loader = DataLoader(data, batch_size=8, num_workers=2, worker_init_fn=slow_start,
                        multiprocessing_context="fork", persistent_workers=False)
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    print("epoch", epoch)
'''


def test_a_loader_rebuilt_each_epoch_is_told_to_keep_its_workers(tmp_path):
    # GIVEN a loop that builds its DataLoader each epoch: every epoch's first batch waits for
    # the workers to start
    script = write(tmp_path / "per_epoch.py", LOADER_PER_EPOCH)
    run = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(run), str(script), cwd=tmp_path)
    assert res.code == 0 and res.stdout.count("epoch") == 4, res.stderr
    findings = analyzed_here(run)["findings"]
    kinds = {f["kind"]: f for f in findings}
    # THEN the advice is to keep the workers (one loader, persistent), not more workers
    startup = kinds["input.worker_startup"]
    assert startup["data"]["rebuilt"] and startup["data"]["passes"] == 4
    assert "persistent_workers=True" in startup["fix"] and "before the epoch loop" in startup["fix"]
    assert "input.dataloader_wait" not in kinds
    # AND an epoch's first step is not "noise on this machine"
    assert "steps.noise" not in kinds, kinds.get("steps.noise", {}).get("title")
    # AND slow steps that waited for those workers do not save the input finding's time again
    # (claims.py DATA_WAIT: it was 377 ms a step "saved" beside 299 ms of worker start-up)
    outliers = kinds.get("steps.outliers")
    if outliers is not None:
        assert any("already claim" in e["text"] for e in outliers["evidence"]), outliers
        # and its fix points at the input finding's, not at more workers
        if "data" in outliers["explanation"].split("Likely causes by step:")[-1][:8]:
            assert "input.worker_startup" in outliers["fix"], outliers["fix"]
            assert "num_workers=4" not in outliers["fix"]
        assert outliers["saving_s"] + startup["saving_s"] <= max(
            outliers["data"]["excess_ms_per_step"] / 1e3, startup["saving_s"]) + 1e-9
