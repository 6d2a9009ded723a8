"""An MLP split with DTensor tensor parallelism (``parallelize_module``, ColwiseParallel then
RowwiseParallel) on 2 gloo ranks: its all-reduces move activations inside forward and
backward, so the communication advice is tensor parallelism's, never DDP's (comm hooks,
``no_sync()``, buckets), which the script does not use and which would not cut them."""

from __future__ import annotations

import pytest

from dsprof.analyzers.frameworks import tensor_parallel
from dsprof.analyzers.registry import Context, analyze
from dsprof.metrics.comm.overlap import comm_overlap
from dsprof.run import load
from tests.integration.helpers import dsprof, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

TP_MLP = """
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel,
                                               parallelize_module)

mesh = init_device_mesh("cpu", (2,))


class MLP(torch.nn.Module):
    def __init__(self, d=64, h=256):
        super().__init__()
        self.up, self.act, self.down = torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Linear(h, d)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


torch.manual_seed(0)
model = torch.nn.Sequential(MLP(), MLP())
for block in model:
    parallelize_module(block, mesh, {"up": ColwiseParallel(), "down": RowwiseParallel()})
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
torch.manual_seed(1)  # every rank sees the same batch
for step in range(16):
    x = torch.randn(16, 64)
    loss = (model(x) - x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
if dist.get_rank() == 0:
    print("trained 16 steps", flush=True)
dist.destroy_process_group()
"""


def test_tensor_parallel_collectives_get_no_ddp_advice(tmp_path):
    # GIVEN a tensor-parallel MLP trained on 2 gloo ranks (no DDP, no FSDP)
    script = write(tmp_path / "tp_mlp.py", TP_MLP)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "--nproc-per-node", "2", "-o", str(out), str(script),
                 timeout=300)
    assert res.code == 0, res.stderr
    assert "trained 16 steps" in res.stdout
    with load(out) as run:
        ctx = Context(run)
        # THEN its collectives are known as tensor parallelism's
        assert tensor_parallel(ctx)
        # AND the time a thread sits in the collective's wait is not compute that hides it:
        # each all-reduce's result is read by the next op, so little of it overlaps
        overlap = sorted(o.overlap_pct for o in comm_overlap(run.con, by_step=True))
        assert overlap and overlap[len(overlap) // 2] < 50, overlap
        result = analyze(run, write=False)
    # AND the DDP-bucket analyzers stand aside, saying why
    skipped = {s["analyzer"]: s["reason"] for s in result.skipped}
    for name in ("comm_overlap", "unbucketed_allreduce"):
        assert "tensor parallelism" in skipped.get(name, ""), name
    # AND no finding prescribes DDP's switches: the all-reduces are in forward and backward
    for f in result.findings:
        text = f.fix + f.explanation
        assert "ddp_model" not in text and "register_comm_hook" not in text, f.title
        assert "bucket_cap_mb" not in text, f.title
    # AND exposed communication, found on 2 CPU ranks (nothing overlaps a forward all-reduce),
    # names tensor parallelism, with no saving to promise
    bound = [f for f in result.findings if f.kind == "comm.bound"]
    assert bound, [f.title for f in result.findings]
    assert "tensor parallelism" in bound[0].title and bound[0].saving_s == 0.0
    assert "parallelize_module" in bound[0].fix
