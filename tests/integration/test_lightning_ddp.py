"""A Lightning Trainer's DDP fit on 2 CPU ranks under ``dsprof run --nproc-per-node 2``: the
ranks record what the script imported (meta.json ``frameworks``), so the communication
finding names the Trainer's switch, not a ``ddp_model`` the script does not have; and that
switch, pasted into the LightningModule, runs (analyzers/comm_switches.py)."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import dsprof, meta, plain, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

# 8 MiB of fp32 gradients a step against a batch of 8: the all-reduce over gloo is most of
# the step. --hook registers the fix's compression hook as comm_switches.py writes it.
LIGHTNING_DDP = """
import sys
import torch
import lightning as L
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.utils.data import DataLoader, TensorDataset

HOOK = "--hook" in sys.argv


class Wide(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                       torch.nn.Linear(1024, 1024))

    def on_fit_start(self):
        if HOOK:
            self.trainer.strategy.model.register_comm_hook(None,
                                                           default_hooks.fp16_compress_hook)

    def on_train_end(self):
        # the DDP model's own record of the hook it runs (the Trainer unwraps it after fit)
        if self.global_rank == 0:
            logged = self.trainer.strategy.model._get_ddp_logging_data()
            print("comm_hook", logged.get("comm_hook"), flush=True)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.net(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


L.seed_everything(0, verbose=False)
data = DataLoader(TensorDataset(torch.randn(512, 1024)), batch_size=8)
trainer = L.Trainer(strategy="ddp", devices=2, accelerator="cpu", max_steps=24, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
model = Wide()
trainer.fit(model, data)
if trainer.global_rank == 0:
    print("global_step", trainer.global_step)
"""


def test_a_lightning_ddp_fit_gets_the_trainers_comm_switch_and_the_switch_runs(tmp_path):
    # GIVEN a Lightning Trainer(strategy="ddp") fit on 2 CPU ranks, launched by dsprof
    script = write(tmp_path / "pl_ddp.py", LIGHTNING_DDP)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "--nproc-per-node", "2", "-o", str(out), str(script),
                 timeout=400)
    assert res.code == 0, res.stderr
    assert "global_step 24" in res.stdout, res.stdout
    # THEN meta.json says what the ranks' script imported (it said nothing under a launcher)
    assert "lightning" in (meta(out).get("frameworks") or []), meta(out).get("frameworks")
    with load(out) as run:
        (bound,) = [f for f in analyze(run, write=False).findings if f.kind == "comm.bound"]
    # AND the communication fix is the Trainer's: no ddp_model, and on CPU the hook gloo takes
    # registered where the strategy built the DDP model (DDPStrategy skips it off CUDA)
    assert "ddp_model" not in bound.fix, bound.fix
    assert "self.trainer.strategy.model.register_comm_hook(None, " \
           "default_hooks.fp16_compress_hook)" in bound.fix, bound.fix
    # AND that line, in the script's on_fit_start, runs: the fit ends with the hook registered
    hooked = plain(script, "--hook", timeout=400)
    assert hooked.returncode == 0, hooked.stderr[-3000:]
    assert "comm_hook fp16_compress_hook" in hooked.stdout, hooked.stdout
    assert "global_step 24" in hooked.stdout
