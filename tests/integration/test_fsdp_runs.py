"""A model sharded with FSDP2 (``fully_shard``) on 2 gloo ranks: dsprof recognises the
framework, and communication advice uses FSDP's switches, never DDP's (comm hooks,
``ddp_model.no_sync()``, ``bucket_cap_mb``)."""

from __future__ import annotations

import pytest

from dsprof.analyzers.frameworks import fsdp_version
from dsprof.analyzers.registry import Context, analyze
from dsprof.run import load
from tests.integration.helpers import dsprof, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

FSDP2 = """
import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

dist.init_process_group("gloo")
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
for layer in model:
    if isinstance(layer, torch.nn.Linear):
        fully_shard(layer)
fully_shard(model)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step in range(12):
    loss = model(torch.randn(16, 32)).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
if dist.get_rank() == 0:
    print("trained 12 steps", flush=True)
dist.destroy_process_group()
"""


def test_fsdp2_is_recognised_and_gets_its_own_switches(tmp_path):
    # GIVEN a per-layer fully_shard model trained on 2 gloo ranks
    script = write(tmp_path / "fsdp2.py", FSDP2)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "--nproc-per-node", "2", "-o", str(out), str(script),
                 timeout=300)
    assert res.code == 0, res.stderr
    assert "trained 12 steps" in res.stdout
    with load(out) as run:
        ctx = Context(run)
        # THEN the run is known as FSDP2
        assert fsdp_version(ctx) == 2
        assert run.sql("SELECT count(DISTINCT rank) FROM steps")[0][0] == 2
        findings = analyze(run, write=False).findings
    # AND no finding prescribes DDP's switches to it
    for f in findings:
        text = f.fix + f.explanation
        assert "ddp_model" not in text and "register_comm_hook" not in text, f.title
        assert "bucket_cap_mb" not in text, f.title
    # AND exposed communication, where found, is cut with FSDP's own switches
    for f in findings:
        if f.kind == "comm.bound":
            assert "fully_shard" in f.fix or "MixedPrecisionPolicy" in f.fix
            assert "FSDP2 (fully_shard)" in " ".join(f.explanation.split())
