"""TorchScript in a training script: ``torch.jit.script`` of a function and of a module the
script defines, ``torch.jit.trace`` before the first step and inside a profiler window, a few
training steps each, then ``torch.jit.save``/``load``. Under ``dsprof run`` it runs as without
it: the tracer records every op a global module hook or saved-tensor hook calls, so dsprof's
``record_function`` spans broke the trace (a JIT internal assert, then a segfault at exit) and
the activation census's reads changed the traced graph ("Graphs differed across invocations")."""

from __future__ import annotations

from dsprof.run import load
from tests.integration.helpers import runs_as_without_dsprof, write

TORCHSCRIPT = """
import os, tempfile
import torch, torch.nn as nn, torch.nn.functional as F

torch.manual_seed(0)


@torch.jit.script
def bias_gelu(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    y = x + b
    return y * 0.5 * (1.0 + torch.tanh(0.79788456 * (y + 0.044715 * y * y * y)))


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.lin = nn.Linear(d, d, bias=False)
        self.b = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + bias_gelu(self.lin(self.norm(x)), self.b)


scripted = torch.jit.script(nn.Sequential(Block(32), Block(32), nn.Linear(32, 4)))
eager = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.LayerNorm(32), nn.Linear(32, 4))
traced = torch.jit.trace(eager, torch.randn(2, 32))  # before any step: the first capture
X, Y = torch.randn(256, 32), torch.randint(0, 4, (256,))
for name, model in (("eager", eager), ("scripted", scripted)):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(12):
        idx = torch.arange(step * 16, step * 16 + 16)
        loss = F.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if name == "eager" and step in (1, 8):  # the second in dsprof's window (steps 7-9)
            again = torch.jit.trace(model, X[:2])
            print(step, str(again.graph).count("aten::"), len(list(again.inlined_graph.nodes())))
    print(name, round(loss.item(), 4))
d = tempfile.mkdtemp()
torch.jit.save(scripted, os.path.join(d, "scripted.pt"))
torch.jit.save(traced, os.path.join(d, "traced.pt"))
with torch.no_grad():
    print(torch.equal(torch.jit.load(os.path.join(d, "scripted.pt"))(X[:4]), scripted(X[:4])),
          torch.equal(torch.jit.load(os.path.join(d, "traced.pt"))(X[:4]), traced(X[:4])))
"""


def test_jit_script_and_trace_run_as_without_dsprof(tmp_path):
    # GIVEN a script that scripts a function and a module, and traces a model before its
    # first step and again inside the profiler window (steps 7-9)
    script = write(tmp_path / "jit_train.py", TORCHSCRIPT)
    out = tmp_path / "run"
    # WHEN profiled
    # THEN the traces pass torch's own check, and status and output are the script's
    res = runs_as_without_dsprof(script, out)
    assert "failed" not in res.stderr, res.stderr  # no collector turned itself off
    # AND every optimizer step is a step (a traced call is no inference step)
    with load(out) as run:
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 24
