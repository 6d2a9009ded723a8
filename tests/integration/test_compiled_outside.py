"""A run that compiles its model, with a hand-written loss around it: the fusion finding on the
loss says it ran outside the compiled code (module paths are off under torch.compile) instead
of telling the script to compile the model it compiles already; the loss is no LayerNorm."""

from __future__ import annotations

import json

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import runs_as_without_dsprof, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

SCRIPT = """
import torch
torch.manual_seed(0)
model = torch.compile(torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                          torch.nn.Linear(512, 512)))
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
x, y = torch.randn(2048, 512), torch.randn(2048, 512)
for step in range(30):
    out = model(x)
    d = out - y
    loss = (d * d).mul(0.5).add(1e-3).sqrt().mean()   # outside the compiled model
    loss.backward()
    opt.step()
    opt.zero_grad()
print("done", round(loss.item(), 3))
"""


def test_a_chain_around_a_compiled_model_is_not_told_to_compile_the_model(tmp_path):
    # GIVEN a compiled model whose loss is hand-written around it, run bare
    script = write(tmp_path / "compiled_loss.py", SCRIPT)
    # WHEN profiled
    out = tmp_path / "run"
    runs_as_without_dsprof(script, out)
    with load(out) as run:
        analyze(run)  # writes findings.json, as the run's end does without --no-analyze
    # THEN the loss chain is found as a pointwise chain outside the compiled code
    findings = json.loads((out / "findings.json").read_text())["findings"]
    fusion = [f for f in findings if f["analyzer"] == "fusion"]
    assert fusion, [f["kind"] for f in findings]
    loss = [f for f in fusion if "sqrt" in f["data"]["ops"]]
    assert loss and loss[0]["kind"] == "fusion.pointwise_chain"
    assert "outside the compiled code" in loss[0]["title"]
    # AND no fix tells the script to compile the model it compiled
    assert not [f for f in fusion if "model.compile()" in f["fix"]]
