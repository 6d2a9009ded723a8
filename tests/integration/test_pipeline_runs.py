"""A model split into two ``torch.distributed.pipelining`` stages on 2 gloo ranks (one
``PipelineStage`` per rank, 4 micro-batches, GPipe and 1F1B): the stages' send/recv are no
gradient sync, so the communication advice is the schedule's (micro-batches, interleaving),
never DDP's; a send on one rank is no collective to match with the other's (no waiting "for
later ranks", no straggler from the bubble); and both stages get a step per iteration, though
only the last computes the loss."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.metrics.comm.skew import rank_skew
from dsprof.run import load
from tests.integration.helpers import dsprof, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

PIPELINE = """
import sys
import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)


def block(width):
    return torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 4 * width),
                               torch.nn.ReLU(), torch.nn.Linear(4 * width, width))


if rank == 0:
    module = torch.nn.Sequential(torch.nn.Linear(32, 128), block(128), block(128))
else:
    module = torch.nn.Sequential(block(128), block(128), torch.nn.Linear(128, 10))
stage = PipelineStage(module, stage_index=rank, num_stages=world, device=torch.device("cpu"))
schedule_class = ScheduleGPipe if sys.argv[1] == "gpipe" else Schedule1F1B
schedule = schedule_class(stage, n_microbatches=4, loss_fn=torch.nn.CrossEntropyLoss())
opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
data = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
target = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
for step in range(24):
    opt.zero_grad()
    if rank == 0:
        schedule.step(data)
    else:
        losses = []
        schedule.step(target=target, losses=losses)
        if step % 8 == 0:
            print(f"step {step} loss {torch.stack(losses).mean().item():.4f}", flush=True)
    opt.step()
dist.destroy_process_group()
"""


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_stages_get_the_schedules_advice_not_ddps(tmp_path, schedule):
    # GIVEN a 2-stage pipeline trained 24 iterations on 2 gloo ranks, plainly and under dsprof
    script = write(tmp_path / "pipeline.py", PIPELINE)
    bare = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                           "2", str(script), schedule], capture_output=True, text=True,
                          timeout=300, check=False, env=_plain_env())
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "--nproc-per-node", "2", "-o", str(out), str(script), schedule,
                 timeout=300)
    # THEN it runs as without dsprof
    assert bare.returncode == 0, bare.stderr
    assert res.code == 0, res.stderr
    assert res.stdout == bare.stdout and "step 16 loss" in res.stdout
    with load(out) as run:
        # AND both stages count one step per iteration (the optimizer's), the first stage too
        per_rank = dict(run.sql("SELECT rank, count(*) FROM steps GROUP BY rank"))
        assert per_rank == {0: 24, 1: 24}, per_rank
        # AND a stage's sends are not matched with the other stage's as one collective
        assert run.sql("SELECT count(*) FROM comms WHERE collective = 'send'")[0][0] > 0
        assert rank_skew(run.con, run.meta) == []
        result = analyze(run, write=False)
    # AND no finding prescribes DDP's switches or names a straggler
    for f in result.findings:
        text = f.fix + f.explanation
        assert "ddp_model" not in text and "register_comm_hook" not in text, f.title
        assert "bucket_cap_mb" not in text and "no_sync" not in f.fix, f.title
        assert f.kind != "comm.straggler", f.title
    # AND the stages' waiting (a 4-micro-batch bubble is 20 % of a step) gets the schedule's
    # switches, with no saving promised
    bound = [f for f in result.findings if f.kind == "comm.bound"]
    assert bound, [f.title for f in result.findings]
    assert "Pipeline stages wait" in bound[0].title
    assert "n_microbatches" in bound[0].fix and "ScheduleInterleaved1F1B" in bound[0].fix
    assert not bound[0].saving_s
    assert "idle 20% of the step" in " ".join(bound[0].explanation.split())


def _plain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env["OMP_NUM_THREADS"] = "1"
    return env
