"""torch.compile's recompilations in a real run: Dynamo's record of each is kept (the
``compiles`` table), the program compiles exactly as it does plainly, and code that
recompiles until Dynamo gives up is a finding (analyzers/recompiles.py)."""

from __future__ import annotations

import json

from dsprof.run import load
from tests.integration.helpers import dsprof, meta, runs_as_without_dsprof, write

COUNTER = '''
import torch
from torch._dynamo.utils import counters, get_compilation_metrics

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
STEP = 0


@torch.compile(backend="eager")
def scaled_loss(x, y):
    return ((model(x) - y) ** 2).mean() * (1.0 + STEP % 13)


for step in range(30):
    STEP = step
    x, y = torch.randn(64, 32), torch.randn(64, 1)
    loss = scaled_loss(x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("graphs", counters["stats"]["unique_graphs"], "compilations",
      len(get_compilation_metrics()), "loss", round(loss.item(), 4))
'''

MODES = '''
import torch
from torch._dynamo.utils import get_compilation_metrics

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Dropout(0.1),
                            torch.nn.Linear(64, 1))
compiled = torch.compile(model, backend="eager")
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(30):
    batch = 64 if step < 10 else 48  # the last batch size, once: Dynamo makes it dynamic
    x, y = torch.randn(batch, 32), torch.randn(batch, 1)
    loss = ((compiled(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 10 == 9:  # an evaluation every 10 steps: one graph for eval mode, cached
        model.eval()
        with torch.no_grad():
            compiled(x)
        model.train()
print("compilations", len(get_compilation_metrics()))
'''


def test_code_recompiled_until_dynamo_gave_up_is_found_and_compiles_as_plain(tmp_path):
    script = write(tmp_path / "counter.py", COUNTER)
    run = tmp_path / "run"
    # GIVEN a compiled loss that reads a global step counter; THEN the program compiles the
    # same graphs as plainly (its own count of them, printed)
    runs_as_without_dsprof(script, run)
    # AND Dynamo's record of each compilation is in the run: 8 compiled, the 9th gave up
    table = load(run).sql("SELECT attempt, step, recompile_reason, fail_reason FROM compiles "
                          "WHERE code = 'scaled_loss' OR fail_reason IS NOT NULL "
                          "ORDER BY attempt")
    assert [r[0] for r in table] == list(range(9))
    assert table[3][2].startswith("0/2: G['STEP'] == 2")
    assert table[-1][3] == "Dynamo recompile limit exceeded"
    assert meta(run)["compile"]["recompile_limit"] == 8
    # AND the finding says so, with the fix for a global
    res = dsprof("analyze", str(run), "--json")
    assert res.code == 0, res.stderr[-2000:]
    (f,) = [f for f in json.loads(res.stdout)["findings"] if f["kind"] == "compile.recompiles"]
    assert f["title"].startswith("Stop recompiling scaled_loss (")
    assert "counter.py:11): it compiled again 7 times" in f["title"]
    assert "runs uncompiled since step 8" in f["title"]
    assert "STEP_t = torch.tensor(float(STEP))" in f["fix"]


def test_mode_switches_and_one_shape_change_are_no_finding(tmp_path):
    script = write(tmp_path / "modes.py", MODES)
    run = tmp_path / "run"
    runs_as_without_dsprof(script, run)
    reasons = [r[0] for r in load(run).sql(
        "SELECT recompile_reason FROM compiles WHERE recompile_reason IS NOT NULL")]
    assert reasons, "the run recompiled for eval mode and a batch size"
    # THEN the script's torch.compile call is kept, with what it compiled
    ((site, what),) = meta(run)["compile"]["calls"]
    assert site.endswith("modes.py:8") and what == "Sequential"
    res = dsprof("analyze", str(run), "--json")
    assert res.code == 0, res.stderr[-2000:]
    assert [f for f in json.loads(res.stdout)["findings"]
            if f["kind"] == "compile.recompiles"] == []
