"""The page faults a per-parameter optimizer loop takes (``steps.optimizer_faults``, counted by
the step collector around ``optimizer.step()``) and the fused-optimizer price that adds them
(analyzers/fusion_optimizer.py). Real torch, real runs: glibc's ``MALLOC_MMAP_THRESHOLD_``
pinned at 64 KiB makes malloc map every 1 MiB temporary fresh and unmap it on free, so the loop
faults its temporaries in every step, as examples/periodic_eval.py's plain script does."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.metrics.ops.optimizer_cost import PAGE_FAULT_S, fused_cpu_s, loop_cpu_s
from dsprof.run import load
from tests.integration.helpers import dsprof, write

WIDE_ADAM = """
import sys
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=sys.argv[1] == "fused" or None)
x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
for _ in range(16):
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
print("done")
"""
PAGES_PER_MIB = 256
MAPPED = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _faults(run_dir):
    with load(run_dir) as run:
        return run.sql("SELECT step, optimizer_faults FROM steps WHERE step > 0 AND NOT "
                       "profiled ORDER BY step")


@pytest.mark.parametrize("impl", ["loop", "fused"])
def test_the_loop_faults_its_temporaries_every_step_and_the_fused_kernel_none(tmp_path, impl):
    # GIVEN Adam over a 1 MiB weight, malloc mapping every temporary afresh
    script = write(tmp_path / "wide_adam.py", WIDE_ADAM)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "-o", str(out), str(script), impl, env=MAPPED)
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == "done"
    faults = _faults(out)
    assert len(faults) >= 8
    if impl == "loop":
        # THEN every step's update faulted at least the pages of one 1 MiB temporary
        assert all(f >= PAGES_PER_MIB for _, f in faults), faults
    else:
        # AND the fused kernel, which allocates nothing, faulted (next to) none
        assert all(f < 64 for _, f in faults), faults


def test_the_fused_price_adds_the_loops_page_faults(tmp_path):
    # GIVEN the faulting loop's run
    script = write(tmp_path / "wide_adam.py", WIDE_ADAM)
    out = tmp_path / "run"
    assert dsprof("run", "-q", "-o", str(out), str(script), "loop", env=MAPPED).code == 0
    faults = [f for _, f in _faults(out)]
    with load(out) as run:
        found = [f for f in analyze(run, write=False).findings if f.kind == "fusion.optimizer"]
    # THEN the finding counts the mean faults of a step and prices them into the loop
    assert len(found) == 1
    f = found[0]
    assert f.data["loop_page_faults"] == pytest.approx(sum(faults) / len(faults))
    assert "page faults" in f.explanation and "allocates none" in f.explanation
    d = f.data
    loop = loop_cpu_s(d["ops_per_step"], d["param_bytes"]) + d["loop_page_faults"] * PAGE_FAULT_S
    fused = fused_cpu_s(d["param_tensors"], d["param_bytes"])
    # the loop's price, printed, holds its faults: over 0.2 ms of them here
    assert d["loop_page_faults"] * PAGE_FAULT_S > 0.2e-3
    assert "page faults per step at 0.9 us each" in " ".join(f.explanation.split())
    assert f"= {loop * 1e3:.3f} ms (at most its recorded extent)" in f.explanation
    # AND the saving is that price (or the loop's recorded extent, when smaller) less the
    # fused kernel's
    assert 0 < f.saving_s <= loop - fused + 1e-9
