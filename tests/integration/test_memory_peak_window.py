"""A CPU run's memory timeline holds only its profiled steps: the peak says over which, so a
buffer that fills after them (a replay buffer, a cache) is not taken for the run's peak."""

from __future__ import annotations

from dsprof.reports.summary import summarize
from dsprof.run import load
from tests.integration.helpers import dsprof, write

FILLING = """
import torch
buffer = []
model = torch.nn.Linear(32, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(30):
    buffer.append(torch.randn(64, 32))  # kept: 8 KiB more live tensors each step
    opt.zero_grad()
    model(torch.cat(buffer[-4:])).square().mean().backward()
    opt.step()
print(len(buffer))
"""


def test_the_cpu_peak_names_the_profiled_steps_it_is_over(tmp_path):
    script = write(tmp_path / "filling.py", FILLING)
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), "--wait", "1", "--warmup", "1", "--active", "2",
                 str(script))
    assert res.code == 0, res.stderr
    with load(out) as run:
        (peak,) = [m for m in summarize(run).memory if m.source == "timeline"]
        profiled = [s for (s,) in run.sql("SELECT step FROM steps WHERE profiled ORDER BY 1")]
    assert len(profiled) == 2
    assert peak.window == f"steps {profiled[0]}-{profiled[1]} of 30"
    assert f"peak memory (cpu, steps {profiled[0]}-{profiled[1]} of 30)" in res.stderr
