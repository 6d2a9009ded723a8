"""The time by phase of a real run's full-speed steps against the script's own clock: a model
of many small modules, whose profiled steps put forward first (dsprof's module annotations
and the profiler's per-op records land on forward's module calls), while plainly its
backward is the larger part (reports/full_speed_phases.py)."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import dsprof, write

DEEP = '''
import time

import torch
from torch import nn

torch.manual_seed(0)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.n, self.act = nn.Linear(32, 32), nn.LayerNorm(32), nn.GELU()

    def forward(self, x):
        return x + self.act(self.n(self.a(x)))


model = nn.Sequential(*[Block() for _ in range(60)], nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
x, y = torch.randn(16, 32), torch.randn(16, 1)
backward = []
for step in range(40):
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    t0 = time.perf_counter()
    loss.backward()
    backward.append(time.perf_counter() - t0)
    opt.step()
backward = sorted(backward[12:])
print(f"backward {backward[len(backward) // 2] * 1e3:.3f}")
'''


@pytest.mark.timing
def test_the_full_speed_split_is_the_scripts_own_steps(tmp_path):
    script = write(tmp_path / "deep.py", DEEP)
    run = tmp_path / "run"
    res = dsprof("run", "-q", "-o", str(run), str(script))
    assert res.code == 0, res.stderr[-2000:]
    own_backward = float(res.stdout.split()[-1])
    doc = json.loads(dsprof("summary", "--json", str(run)).stdout)
    phases = {p["phase"]: p for p in doc["full_speed_phases"]}
    # THEN backward is timed in each counted step: the script's own backward, give or take the
    # machine's load
    assert doc["full_speed_steps"] >= 20
    assert 0.5 < phases["backward"]["ms"] / own_backward < 2.0, (phases, own_backward)
    assert {"forward and the rest", "backward", "optimizer"} <= set(phases)
    # AND the profiled split is still there, for what the profiler saw
    assert doc["phases"]
