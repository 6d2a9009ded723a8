"""The bootstrap capture stops at --max-capture in a script of bare tensor ops (no module call,
no backward(), no optimizer: none of the points where dsprof's hooks run), and the signal its
alarm borrows is back at its default after, or never taken from the script."""

from __future__ import annotations

import json

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


def _run(tmp_path, *args):
    script = write(tmp_path / "bare.py", BARE_LOOP)
    out = tmp_path / "run"
    # (no ingest: the capture's raw trace says how much of the loop it holds)
    res = dsprof("run", "--no-analyze", "-o", str(out), "--max-capture", "1", str(script),
                 *args)
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


def test_chains_of_the_kept_setup_capture_are_no_steps_work(tmp_path):
    # GIVEN a preprocessing loop that outlasts the capture cap, then training with a window
    script = write(tmp_path / "prep.py", PREPROCESS_THEN_TRAIN)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "-o", str(out), "--max-capture", "0.5", "--wait", "1",
                 "--warmup", "1", "--active", "2", str(script))
    assert res.code == 0, res.stderr
    # (the capped capture of step 0 is kept beside the training's window)
    assert [w["kind"] for w in meta(out)["windows"]] == ["unstepped", "window"]
    # THEN no fusion finding stands on the setup's ops alone (each preprocessing sample's
    # mul -> add -> relu -> mul -> mean was "15.7 ms a step", averaged over the profiled steps)
    findings = json.loads((out / "findings.json").read_text())["findings"]
    for f in findings:
        if f["analyzer"] == "fusion":
            assert any(e.get("step") not in (0, None) for e in f["evidence"]), f["title"]
