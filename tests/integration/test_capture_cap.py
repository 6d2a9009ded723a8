"""The bootstrap capture stops at --max-capture, or once the heap grew --max-capture-mb while it
recorded, in a script of bare tensor ops (no module call, no backward(), no optimizer: none of
the points where dsprof's hooks run), and the signal its alarm borrows is back at its default
after, or never taken from the script. A capped capture of setup is set aside once the steps
have a window of their own."""

from __future__ import annotations

import json

import dsprof as dsprof_api
from tests.integration.helpers import dsprof, meta, write

BARE_LOOP = """
import signal
import torch

if "--own-handler" in __import__("sys").argv:
    signal.signal(signal.SIGRTMAX - 7, lambda *a: print("the script's handler"))
n = int(__import__("sys").argv[-1]) if __import__("sys").argv[-1].isdigit() else 100_000
for _ in range(n):  # preprocessing in bare tensor ops: 4-5 s profiled here
    torch.randn(64, 64).tanh().sum()
print("iterations", n)
handler = signal.getsignal(signal.SIGRTMAX - 7)
print("handler", "default" if handler == signal.SIG_DFL else getattr(handler, "__name__", "?"))
"""


def _run(tmp_path, *args, cap=("--max-capture", "1")):
    script = write(tmp_path / "bare.py", BARE_LOOP)
    out = tmp_path / "run"
    # (no ingest: the capture's raw trace says how much of the loop it holds)
    res = dsprof("run", "--no-analyze", "-o", str(out), *cap, str(script), *args)
    assert res.code == 0, res.stderr
    iterations = int(next(line.split()[1] for line in res.stdout.splitlines()
                          if line.startswith("iterations")))
    traces = list((out / "raw" / "rank0").glob("window-*.trace.json"))
    captured = sum(t.read_text().count('"name": "aten::tanh"') for t in traces)
    return res, out, iterations, captured


def test_a_loop_of_bare_tensor_ops_is_captured_up_to_the_cap_only(tmp_path):
    # GIVEN 100,000 iterations of bare tensor ops (4-5 s profiled) and a 1 s capture cap
    res, out, iterations, captured = _run(tmp_path)
    # THEN the capture stopped at the cap, well before the loop ended (it used to run until the
    # first module call: the whole loop, its events held in memory)
    assert meta(out)["capped"] is True
    assert 0 < captured < 0.7 * iterations, (captured, iterations)
    # AND the signal the alarm borrowed is back at its default in the script
    assert "handler default" in res.stdout


def test_a_loop_of_bare_tensor_ops_is_captured_until_the_heap_grew_the_memory_cap(tmp_path):
    # GIVEN the same loop with an hour of time cap and 16 MiB of heap for the capture (the
    # profiler keeps every op until it stops, and stopping builds the results of them all: 6 s
    # of this loop took a 0.3 GB script to 2.4 GB without this cap)
    res, out, iterations, captured = _run(
        tmp_path, cap=("--max-capture", "3600", "--max-capture-mb", "16"))
    # THEN the capture stopped by memory, early in the loop, and said so
    m = meta(out)
    assert m["capped"] is True and m["capped_by"] == "memory" and m["max_capture_mb"] == 16
    assert 0 < captured < 0.5 * iterations, (captured, iterations)
    assert "the process's heap grew" in res.stderr and "--max-capture-mb" in res.stderr
    # AND it asks for no code change: the steps of a script that has them are found when they
    # come (llm.c's setup and first evaluation reach the cap with nothing to change)
    said = " ".join(res.stderr.split())
    assert "the capture of the setup stops here. The steps are still found and profiled " \
        "when they come; a loop with no optimizer step or backward() marks them with " \
        "dsprof.step()" in said, said
    # AND the summary of that stepless run says why it holds only the loop's start
    text = " ".join(dsprof("summary", str(out)).stdout.split())
    assert "but stopped earlier: the process's heap grew 16.0 MiB" in text
    assert "handler default" in res.stdout


def test_a_scripts_own_handler_for_the_signal_is_never_replaced(tmp_path):
    # GIVEN a script that handles SIGRTMAX - 7 itself (set after dsprof's session started: the
    # alarm found it at its default, so dsprof's handler stands until the script replaces it)
    res, _, _, _ = _run(tmp_path, "--own-handler", "2000")
    # THEN the script's handler is what the script reads, and it never ran (no OS signal, and
    # dsprof's timer does not ring a handler that is not its own)
    assert "handler <lambda>" in res.stdout
    assert "the script's handler" not in res.stdout


PREPROCESS_THEN_TRAIN = """
import torch
from torch import nn

torch.manual_seed(0)
feats = []
for i in range(400):  # preprocessing in bare tensor ops, grad mode on, past the capture cap
    x = torch.randn(256, 1024)
    feats.append(((x * 0.5 + 1.0).relu() * 2.0).mean(0))
X = torch.stack(feats)[:, :64]
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(30):
    opt.zero_grad()
    model(X[step % 4 * 64:(step % 4 + 1) * 64]).square().mean().backward()
    opt.step()
"""


def test_a_capped_capture_of_setup_is_set_aside_once_the_steps_have_a_window(tmp_path):
    # GIVEN a preprocessing loop that outlasts the capture cap, then training with a window
    script = write(tmp_path / "prep.py", PREPROCESS_THEN_TRAIN)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "-o", str(out), "--max-capture", "0.5", "--wait", "1",
                 "--warmup", "1", "--active", "2", str(script))
    assert res.code == 0, res.stderr
    # THEN the capped capture of step 0 is set aside with its files, as an earlier loop's
    # window is: its trace stays whole for `dsprof import`
    windows = meta(out)["windows"]
    assert [w["kind"] for w in windows] == ["setup", "window"]
    assert windows[0]["file"] == "setup/window-0.trace.json"
    assert (out / "raw" / "rank0" / "setup" / "window-0.trace.json").is_file()
    assert not (out / "raw" / "rank0" / "window-0.trace.json").exists()
    # AND the profiled steps and their ops are the training's: the setup's ops were the top
    # ops and a profiled step 0 (its mul -> add -> relu -> mul -> mean "15.7 ms a step")
    with dsprof_api.load(out) as run:
        assert run.sql("SELECT list(step ORDER BY step) FROM steps WHERE profiled")[0][0] == \
            windows[1]["steps"]
        assert run.sql("SELECT count(*) FROM ops WHERE step = 0") == [(0,)]
    findings = json.loads((out / "findings.json").read_text())["findings"]
    assert not [f for f in findings if any(e.get("step") == 0 for e in f["evidence"])]
    # AND the summary says where the setup's capture went
    notes = json.loads(dsprof("summary", "--json", str(out)).stdout)["notes"]
    (note,) = [n for n in notes if "first step stopped before that step" in n]
    assert "when 0.5 s passed (--max-capture)" in note
    assert f"dsprof import -o NEW_RUN {out / 'raw' / 'rank0' / 'setup'}" in note


DROPOUT_FORWARD = """
import time
start = time.perf_counter()
import torch
import torch.nn.functional as F

torch.manual_seed(0)
w = torch.nn.Parameter(torch.randn(2048, 2048))
opt = torch.optim.SGD([w], lr=0.1)
# a long forward before the first step boundary (a GAT's first epoch on a whole graph): dropout
# draws its mask (most of its time), then multiplies and saves the mask, packed inside the op
while time.perf_counter() - start < 7:
    loss = F.dropout(w, p=0.5, training=True).sum()
for _ in range(3):
    opt.zero_grad()
    loss.backward()
    opt.step()
    loss = F.dropout(w, p=0.5, training=True).sum()
print("trained")
"""


def test_the_cap_never_stops_the_profiler_inside_an_op(tmp_path):
    # GIVEN a forward whose ops pack a tensor for backward inside their record (dsprof's
    # saved-tensor hook) when the 3 s cap passes
    script = write(tmp_path / "dropout.py", DROPOUT_FORWARD)
    out = tmp_path / "run"
    res = dsprof("run", "--no-analyze", "-o", str(out), "--max-capture", "3", str(script))
    assert res.code == 0, res.stderr
    # WHEN the alarm rings in that forward (the capture holds some of its dropouts): before,
    # its handler ran in the pack hook inside dropout's aten::mul, 3 runs of 3, and torch
    # warned on the script's stderr, as under pytorch/examples' GAT
    assert meta(out)["capped"] is True
    traces = list((out / "raw" / "rank0").rglob("window-*.trace.json"))
    assert sum(t.read_text().count('"name": "aten::dropout"') for t in traces) > 0
    # THEN the capture stopped between ops: no open record for torch to warn about
    assert "collection.cpp" not in res.stderr and "Triggered internally" not in res.stderr, \
        res.stderr[-2000:]
    assert res.stdout.splitlines()[-1] == "trained"
