"""An optimizer that wraps another and is no optimizer to torch (Opacus' ``DPOptimizer``
subclasses ``torch.optim.Optimizer`` without calling its ``__init__``, clips and adds noise in
its own ``step()``, then steps the SGD it holds): that work is the optimizer phase at full speed
(collectors/optimizer_wrappers.py). It read as "forward and the rest": optimizer 1 % of a DP-SGD
step whose ``DPOptimizer.step`` was a quarter of it."""

from __future__ import annotations

import json

import pytest

import dsprof as dsprof_api
from tests.integration.helpers import dsprof, plain, write

# written here in the shape of Opacus' DPOptimizer (its code is not copied): the wrapper's own
# work is a per-parameter clip and noise, and a fixed wait the script times itself; with
# "closure", it hands the inner optimizer a closure of its own that calls the script's (its
# time is counted once, not twice)
WRAPPED = '''
import sys
import time

import torch
from torch import nn

torch.manual_seed(0)


class PrivateOptimizer(torch.optim.Optimizer):
    """Holds the optimizer it steps; never calls Optimizer.__init__."""

    def __init__(self, optimizer, max_norm):
        self.original_optimizer = optimizer
        self.max_norm = max_norm
        self.spent = []

    @property
    def param_groups(self):
        return self.original_optimizer.param_groups

    @property
    def state(self):
        return self.original_optimizer.state

    def zero_grad(self, set_to_none=True):
        self.original_optimizer.zero_grad(set_to_none)

    def step(self, closure=None):
        t0 = time.perf_counter()
        if closure is not None:  # its own closure around the script's, to the inner step
            time.sleep(0.004)
            self.spent.append(time.perf_counter() - t0)
            return self.original_optimizer.step(lambda: closure())
        for group in self.param_groups:
            for p in group["params"]:
                norm = torch.linalg.vector_norm(p.grad)
                p.grad.mul_((self.max_norm / (norm + 1e-6)).clamp(max=1.0))
                p.grad.add_(torch.randn_like(p.grad), alpha=1e-3)
        time.sleep(0.004)
        self.spent.append(time.perf_counter() - t0)
        return self.original_optimizer.step()


model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
opt = PrivateOptimizer(torch.optim.SGD(model.parameters(), lr=0.05), max_norm=1.0)
x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
with_closure = sys.argv[1] == "closure"
for step in range(40):
    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    if with_closure:
        opt.step(closure)
    else:
        closure()
        opt.step()
spent = sorted(opt.spent[12:])
print(f"wrapper {spent[len(spent) // 2] * 1e3:.3f}")
print("weights", round(float(sum(p.detach().sum() for p in model.parameters())), 4))
print("step is its own", type(opt).step.__name__, type(opt).step.__qualname__)
'''


@pytest.mark.timing
@pytest.mark.parametrize("how", ["plain", "closure"])
def test_a_wrapping_optimizers_own_work_is_the_optimizer_phase(tmp_path, how):
    script = write(tmp_path / "wrapped.py", WRAPPED)
    run = tmp_path / "run"
    res = dsprof("run", "-q", "-o", str(run), str(script), how)
    assert res.code == 0, res.stderr[-2000:]
    # THEN the script ran as without dsprof: same weights, its class's step as it wrote it
    bare = plain(script, how)
    assert bare.returncode == 0, bare.stderr
    assert res.stdout.splitlines()[1:] == bare.stdout.splitlines()[1:]
    own_ms = float(res.stdout.split()[1])
    doc = json.loads(dsprof("summary", "--json", str(run)).stdout)
    phases = {p["phase"]: p for p in doc["full_speed_phases"]}
    # AND at full speed the optimizer phase is the wrapper's step (its clip, noise and wait,
    # over 4 ms), not the inner SGD's update alone (well under 1 ms); a closure the wrapper
    # runs is forward and backward, not the update
    assert 0.8 < phases["optimizer"]["ms"] / own_ms < 2.0, (phases, own_ms)
    assert sum(p["percent"] for p in phases.values()) == pytest.approx(100, abs=0.5)
    assert phases["forward and the rest"]["ms"] > 0
    assert "optimizer phase: __main__.PrivateOptimizer" in (run / "dsprof.log").read_text()
    # AND the profiler stays quiet on the script's stderr (an annotation around the wrapper's
    # step held the boundary, and torch warned: "Optimizer.step#SGD.step ... collection.cpp")
    assert "collection.cpp" not in res.stderr, res.stderr
    # AND the model's own ops are still forward in the profiled steps
    with dsprof_api.load(run) as r:
        model_ops = dict(r.sql("SELECT phase, count(*) FROM ops WHERE step IS NOT NULL "
                               "AND name IN ('aten::addmm', 'aten::relu') GROUP BY phase"))
    assert set(model_ops) == {"forward"}, model_ops
