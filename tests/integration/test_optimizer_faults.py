"""What a per-parameter optimizer loop pays that its sizes do not say, measured in the run and
priced by analyzers/fusion_optimizer.py: the page faults it takes (``steps.optimizer_faults``, counted by
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

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

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
UNMAPPED = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def _faults(run_dir):
    with load(run_dir) as run:
        return run.sql("SELECT step, optimizer_faults FROM steps WHERE step > 0 AND NOT "
                       "profiled ORDER BY step")


@pytest.mark.parametrize("impl", ["loop", "fused"])
def test_the_loop_faults_its_temporaries_every_step_and_the_fused_kernel_none(tmp_path, impl):
    # GIVEN Adam over a 1 MiB weight, malloc mapping every temporary afresh
    script = write(tmp_path / "wide_adam.py", WIDE_ADAM)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), impl, env=MAPPED)
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == "done"
    faults = _faults(out)
    assert len(faults) >= 8
    # AND each of those steps has the thread's CPU time inside optimizer.step()
    with load(out) as run:
        cpu = run.sql("SELECT optimizer_cpu_ns FROM steps WHERE step > 0 AND NOT profiled")
    assert all(c is not None and c > 0 for (c,) in cpu), cpu
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
    assert dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), "loop", env=MAPPED).code == 0
    with load(out) as run:
        found = [f for f in analyze(run, write=False).findings if f.kind == "fusion.optimizer"]
        # the steps that show the program's heap: after the first, before the first profiler
        # window (metrics/heap_steps.py; after a window the heap keeps the freed buffers)
        faults = [f for (f,) in run.sql("""
            SELECT optimizer_faults FROM steps WHERE rank = 0 AND step > 0 AND NOT profiled
              AND disturbed_by IS NULL AND step < (
                SELECT min(step) FROM steps
                WHERE profiled OR disturbed_by IN ('warmup', 'window'))""")]
    assert faults
    # THEN the finding counts the mean faults of a step and prices them into the loop
    assert len(found) == 1
    f = found[0]
    assert f.data["loop_page_faults"] == pytest.approx(sum(faults) / len(faults))
    assert "page faults" in f.explanation and "allocates none" in f.explanation
    d = f.data
    loop = (loop_cpu_s(d["ops_per_step"], d["param_bytes"]) + d["loop_page_faults"] * PAGE_FAULT_S
            + d.get("loop_sqrt_excess_s", 0.0))
    fused = fused_cpu_s(d["param_tensors"], d["param_bytes"])
    # the loop's price, printed, holds its faults: over 0.2 ms of them here
    assert d["loop_page_faults"] * PAGE_FAULT_S > 0.2e-3
    assert "page faults per step at 0.9 us each" in " ".join(f.explanation.split())
    assert f"= {loop * 1e3:.3f} ms, the fused kernel" in f.explanation
    # AND the saving is that price at the run's pace (its unprofiled steps' optimizer.step()
    # against the price: the faults counted, not paced), or the loop's recorded extent when
    # smaller, less the fused kernel's at that pace
    speed = d["pace"]
    assert d["unprofiled_update_s"] > 0 and f"{speed:.2f}x their price" in f.explanation
    paced_loop = loop + (speed - 1) * loop_cpu_s(d["ops_per_step"], d["param_bytes"])
    assert 0 < f.saving_s <= paced_loop - speed * fused + 1e-9


ZERO_GRADS = """
import sys
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(512, 512)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.randn(32, 512)
if sys.argv[1] == "zeros":
    x[:, 64:] = 0  # 7 of 8 input features off: 7/8 of each weight row's gradient is zero
for _ in range(16):
    opt.zero_grad(set_to_none=True)
    model(x).pow(2).mean().backward()
    opt.step()
print("done")
"""


def _fused_finding(tmp_path, kind):
    script = write(tmp_path / "zero_grads.py", ZERO_GRADS)
    out = tmp_path / kind
    # malloc keeps every temporary (no fresh mapping, no trim): no page faults, whose time
    # inside a sqrt is priced as faults and taken off its excess
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), kind, env=UNMAPPED)
    assert res.code == 0, res.stderr
    with load(out) as run:
        (f,) = [f for f in analyze(run, write=False).findings if f.kind == "fusion.optimizer"]
    return f


def test_the_loops_sqrt_on_zeros_is_priced_from_its_profiled_ops(tmp_path):
    # GIVEN Adam over a weight whose gradient is zero in 7 of 8 columns (exp_avg_sq too):
    # torch's CPU sqrt takes ~1-11 ns a zero (by CPU) against ~0.2-0.5 ns a value; the fused
    # kernel does not (every other column zero made that sqrt only ~3x slower on an AMD EPYC)
    zeros = _fused_finding(tmp_path, "zeros")
    # THEN the finding prices what the loop's sqrt took beyond a zero-free one, and says so
    excess = zeros.data["loop_sqrt_excess_s"]
    # 229 K zeros: 0.30 ms of excess on an AMD EPYC (the sqrt at 4.7x its zero-free price),
    # against none for the same sqrt without zeros (the test below)
    assert excess > 0.1e-3
    assert "sqrt ops took beyond a sqrt of the same size without zeros" in " ".join(
        zeros.explanation.split())
    # AND the same model with no zero gradients has no such excess: a sqrt that took under
    # twice its zero-free price ran slow, not on zeros (this test's zero-free twin ran 0.9-1.6x
    # a step under the profiler, and was read as 0.052 ms of excess before that floor)
    plain = _fused_finding(tmp_path, "plain")
    assert "loop_sqrt_excess_s" not in plain.data
    assert "without zeros" not in plain.explanation
