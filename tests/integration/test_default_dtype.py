"""A script that makes float64 the default dtype (``torch.set_default_dtype``) together with
``torch.use_deterministic_algorithms(True)``: it runs as without dsprof, and the fp64 advice
undoes the default instead of prescribing ``model.float()``, which would leave the script's
inputs fp64 and fail at the first layer (a dtype mismatch)."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import meta, runs_as_without_dsprof, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

FLOAT64_DEFAULT = """
import torch
import torch.nn.functional as F

torch.use_deterministic_algorithms(True)
torch.set_default_dtype(torch.float64)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 4))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
X, Y = torch.randn(256, 32), torch.randint(0, 4, (256,))
for step in range(20):
    i = torch.arange(step * 12, step * 12 + 12)
    loss = F.cross_entropy(model(X[i]), Y[i])
    opt.zero_grad()
    loss.backward()
    opt.step()
print(loss.dtype, repr(loss.item()))
"""


def test_float64_default_gets_the_default_undone(tmp_path):
    # GIVEN a script that sets float64 as the default dtype and deterministic algorithms
    script = write(tmp_path / "fp64_default.py", FLOAT64_DEFAULT)
    out = tmp_path / "run"
    # WHEN profiled THEN it runs as without dsprof (same status and output, loss bit for bit)
    runs_as_without_dsprof(script, out)
    # AND the run records the default dtype the script left
    assert meta(out)["precision"]["default_dtype"] == "float64"
    with load(out) as run:
        findings = analyze(run, write=False).findings
    fp64 = [f for f in findings if f.kind == "tensor_core.fp64"]
    assert fp64, [f.title for f in findings]
    # AND its fix is the default dtype's, not model.float() (the inputs would stay fp64)
    assert "torch.set_default_dtype(torch.float32)" in fp64[0].fix
    assert "model.float()" not in fp64[0].fix
