"""Ranks the script starts itself as new processes that dsprof does not follow: Lightning's
``Trainer(strategy="ddp")`` on CPUs runs ``python script.py`` again for each other rank
(its subprocess launcher). The run said "world size 1" and never named rank 1; now it says
how wide the script's process group was and how to profile every rank."""

from __future__ import annotations

import re

import pytest

from tests.integration.helpers import dsprof, meta, write

pytest.importorskip("lightning")

LIGHTNING_DDP = '''
import sys

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Reg(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))

    def training_step(self, batch, i):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-2)


if __name__ == "__main__":
    L.seed_everything(0)
    x = torch.randn(1024, 16)
    loader = DataLoader(TensorDataset(x, x[:, :1]), batch_size=16)
    trainer = L.Trainer(strategy="ddp", devices=2, accelerator="cpu", max_steps=12,
                        enable_progress_bar=False, enable_model_summary=False, logger=False,
                        enable_checkpointing=False)
    trainer.fit(Reg(), loader)
    sys.stdout.write(f"rank {trainer.global_rank} steps {trainer.global_step}\\n")
'''


def test_ranks_the_script_launched_itself_are_named_with_the_way_to_profile_them(tmp_path):
    # GIVEN a Lightning DDP script on 2 CPU processes, run as a plain script
    script = write(tmp_path / "ddp.py", LIGHTNING_DDP)
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), str(script), cwd=tmp_path, timeout=300)
    # THEN it ran as it does (both ranks trained)
    assert res.code == 0, res.stderr[-3000:]
    # (the two processes share the pipe: their lines may land in one another)
    assert sorted(re.findall(r"rank \d steps \d+", res.stdout)) == ["rank 0 steps 12",
                                                                    "rank 1 steps 12"]
    # AND the run says its process group had 2 ranks, and how to profile both
    m = meta(out)
    assert m["group_unprofiled"] == {"world_size": 2, "rank": 0}
    summary = " ".join(dsprof("summary", str(out)).stdout.split())
    assert "process group has 2 ranks and dsprof profiled this process only (rank 0)" in summary
    assert "dsprof run --nproc-per-node 2 SCRIPT" in summary
