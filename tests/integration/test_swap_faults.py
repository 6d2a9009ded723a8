"""The page faults a step takes outside optimizer.step() (``steps.step_faults``, counted by the
step collector boundary to boundary) and the GELU swap's price that adds them, up to the pages
the swap no longer allocates (metrics/ops/library_cost.swap_faults). Real torch, real runs:
glibc's ``MALLOC_MMAP_THRESHOLD_`` pinned at 64 KiB makes malloc map every 2 MiB intermediate
fresh and unmap it on free, so the hand GELU's intermediates fault in every step, as
convnext_gelu's did (2,500-4,000 faults a step against 500-600 with F.gelu)."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import dsprof, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

HAND_GELU = """
import math
import torch
from torch import nn


class TanhGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                           * (x + 0.044715 * torch.pow(x, 3.0))))


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), TanhGELU(), nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(2048, 64), torch.randint(0, 10, (2048,))
for _ in range(16):
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
print("done")
"""
MAPPED = {"MALLOC_MMAP_THRESHOLD_": "65536"}
PAGES_PER_TENSOR = 2048 * 256 * 4 // 4096


def test_the_steps_faults_are_counted_and_the_swap_says_it_may_take_them(tmp_path):
    # GIVEN a hand GELU on a (2048, 256) activation, malloc mapping every intermediate afresh
    script = write(tmp_path / "hand_gelu.py", HAND_GELU)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), env=MAPPED)
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == "done"
    with load(out) as run:
        rows = run.sql("""SELECT step_faults, optimizer_faults FROM steps
                          WHERE step > 0 AND NOT profiled AND disturbed_by IS NULL""")
        found = [f for f in analyze(run, write=False).findings if f.kind == "fusion.hand_gelu"]
    # THEN every steady step counts its faults, the optimizer's among them, and they hold at
    # least the intermediates' pages (7 of them forward alone)
    assert len(rows) >= 6 and all(s is not None and s >= (o or 0) for s, o in rows), rows
    assert min(s for s, _ in rows) >= 7 * PAGES_PER_TENSOR, rows
    # AND the swap may take those faults with it: here they weigh more than a quarter of its
    # fault-free price, so it is a range, priced at its lower end and not ranked, and says so
    (f,) = found
    assert f.severity == "info" and "page faults per step go with it" in f.data["impact_unknown"]
    assert "malloc decides" in f.explanation
