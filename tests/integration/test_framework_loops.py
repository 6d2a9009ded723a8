"""Training loops written the way framework users write them run under ``dsprof run`` as they
run without it, their steps are optimizer steps, and the advice names the framework's own
switch (analyzers/frameworks.py)."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import meta, runs_as_without_dsprof, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

# Hugging Face Accelerate: bf16 mixed precision (Accelerate enters CPU autocast around the
# prepared model's forward: the script has no autocast block), 4 micro-batches a step. At
# these widths bf16's casts cost more than its matmuls save (analyzers/cpu_autocast.py).
ACCELERATE = """
import os
import torch
from torch.utils.data import DataLoader, TensorDataset
from accelerate import Accelerator
from accelerate.utils import set_seed

set_seed(0)
accelerator = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.LayerNorm(256),
                            torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 10))
x, y = torch.randn(2048, 64), torch.randint(0, 10, (2048,))
loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=len(loader) // 4 + 1)
model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
updates = 0
for xb, yb in loader:
    with accelerator.accumulate(model):
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    if accelerator.sync_gradients:
        updates += 1
        if updates % 4 == 0:
            accelerator.print(f"update {updates} loss {loss.item():.4f}")
here = os.path.dirname(os.path.abspath(__file__))
accelerator.save(accelerator.unwrap_model(model).state_dict(), os.path.join(here, "weights.pt"))
print("optimizer steps", updates)
"""


def test_accelerate_bf16_accumulation_gets_accelerates_switch(tmp_path):
    # GIVEN an Accelerate loop: bf16, 4 micro-batches per optimizer step, 16 steps
    script = write(tmp_path / "accel.py", ACCELERATE)
    out = tmp_path / "run"
    # WHEN profiled, THEN it prints what it prints without dsprof
    res = runs_as_without_dsprof(script, out)
    assert "optimizer steps 16" in res.stdout and (tmp_path / "weights.pt").exists()
    # AND the session records that the script built an Accelerator
    assert "accelerate.Accelerator" in meta(out)["frameworks"]
    with load(out) as run:
        # AND its steps are the 16 optimizer steps, not the 64 micro-batches
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 16
        findings = analyze(run, write=False).findings
    # AND the autocast finding's fix is Accelerate's switch first: there is no autocast
    # block in the script to delete
    (slower,) = [f for f in findings if f.kind == "precision.cpu_autocast_slower"]
    assert slower.fix.startswith('# Accelerate: Accelerator(..., mixed_precision="no")'), \
        slower.fix
    assert "Hugging Face" not in slower.fix and "Lightning" not in slower.fix

# Lightning: 4 micro-batches a step, clipping, and a checkpoint every 8 optimizer steps (the
# buffer makes each checkpoint 16 MB: its save is many times a step's compute). The saves land
# in steps 8 (the profiler window's trace write, left out), 16 and 24: two slow steady steps,
# too few for a stride of outliers.
LIGHTNING = """
import os
import shutil
import torch
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.register_buffer("class_stats", torch.zeros(4_000_000))  # saved with the weights
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                       torch.nn.Linear(256, 8))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


L.seed_everything(0, verbose=False)
x, y = torch.randn(4096, 64), torch.randint(0, 8, (4096,))
out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ckpts")
shutil.rmtree(out_dir, ignore_errors=True)  # a fresh run: Lightning versions names it finds
ckpt = ModelCheckpoint(dirpath=out_dir, filename="{step}", every_n_train_steps=8, save_top_k=-1)
trainer = L.Trainer(max_steps=32, accelerator="cpu", devices=1, logger=False, callbacks=[ckpt],
                    accumulate_grad_batches=4, gradient_clip_val=1.0,
                    enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Classifier(), DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
print("global_step", trainer.global_step, sorted(os.listdir(out_dir)))
"""


def test_lightning_checkpoints_every_n_steps_are_named_as_checkpointing(tmp_path):
    # GIVEN a Lightning fit with accumulation, clipping and ModelCheckpoint(every 8 steps)
    script = write(tmp_path / "pl_ckpt.py", LIGHTNING)
    out = tmp_path / "run"
    # WHEN profiled, THEN it prints (and saves) what it does without dsprof
    res = runs_as_without_dsprof(script, out)
    assert "global_step 32 ['step=16.ckpt', 'step=24.ckpt', 'step=32.ckpt', 'step=8.ckpt']" \
        in res.stdout
    with load(out) as run:
        # AND the steps are the 32 optimizer steps; torch.save ran in steps 8, 16 and 24
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 32
        saved = [s for (s,) in run.sql("SELECT step FROM steps WHERE save_ns > 0 ORDER BY 1")]
        assert saved == [8, 16, 24]
        findings = analyze(run, write=False).findings
    # AND the slow saving steps are the script's periodic work with its checkpoint named, at
    # the saves' stride, in Lightning's words, and no saving
    (slow,) = [f for f in findings if f.analyzer == "step_outliers"]
    assert slow.kind == "steps.periodic", slow.title
    assert "checkpoint sav" in slow.title, slow.title
    assert "torch.save at lightning/fabric/utilities/cloud_io.py:" in slow.title
    assert slow.data["period"] == 8 and not slow.saving_s
    assert "ModelCheckpoint(..., every_n_train_steps=32)  # was 8" in slow.fix


# The same fit saving at each epoch's end (ModelCheckpoint(every_n_epochs=1), darts' way): 512
# samples in batches of 32, 2 accumulated a step, so 8 steps an epoch and a save every 8.
LIGHTNING_EPOCHS = LIGHTNING.replace(
    "x, y = torch.randn(4096, 64), torch.randint(0, 8, (4096,))",
    "x, y = torch.randn(512, 64), torch.randint(0, 8, (512,))").replace(
    'filename="{step}", every_n_train_steps=8, save_top_k=-1',
    'filename="{step}", every_n_epochs=1, save_top_k=-1').replace(
    "max_steps=32,", "max_epochs=5,").replace(
    "accumulate_grad_batches=4,", "accumulate_grad_batches=2,")


def test_lightning_checkpoints_each_epoch_get_the_epoch_interval_and_lightnings_async_io(
        tmp_path):
    # GIVEN a Lightning fit of 5 epochs of 8 steps, ModelCheckpoint(every_n_epochs=1)
    script = write(tmp_path / "pl_epochs.py", LIGHTNING_EPOCHS)
    out = tmp_path / "run"
    # WHEN profiled, THEN it prints (and saves) what it does without dsprof
    res = runs_as_without_dsprof(script, out)
    assert "global_step 40 ['step=16.ckpt', 'step=24.ckpt', 'step=32.ckpt', 'step=40.ckpt', " \
           "'step=8.ckpt']" in res.stdout, res.stdout
    with load(out) as run:
        findings = analyze(run, write=False).findings
    (slow,) = [f for f in findings if f.analyzer == "step_outliers"]
    assert slow.kind == "steps.periodic" and slow.data["period"] == 8, slow.title
    # AND the interval to lengthen is the callback's epochs, as many steps as an epoch has
    # (not an every_n_train_steps the script never set, with a "was" it never had)
    assert "ModelCheckpoint(..., every_n_epochs=4)  # it saved every epoch (8 steps)" \
        in slow.fix, slow.fix
    assert "every_n_train_steps" not in slow.fix
    # AND saving off the training thread is the Trainer's checkpoint IO plugin, not DCP
    assert "Trainer(..., plugins=[AsyncCheckpointIO()]), from lightning.pytorch.plugins" \
        in slow.fix
    assert "torch.distributed.checkpoint" not in slow.fix

# Lightning Fabric: fabric.setup() wraps the model in a _FabricModule (which holds it as
# _forward_module); the script's own loop, fabric.backward, a DataLoader set up by Fabric.
FABRIC = """
import torch
import lightning as L
from torch.utils.data import DataLoader, TensorDataset


class Block(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = torch.nn.Linear(d, 4 * d)
        self.out = torch.nn.Linear(4 * d, d)

    def forward(self, x):
        h = self.fc(x)
        h = 0.5 * h * (1.0 + torch.tanh(0.7978845608 * (h + 0.044715 * h * h * h)))
        return self.out(h) + x


class Net(torch.nn.Module):
    def __init__(self, d=256):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block(d) for _ in range(2))
        self.head = torch.nn.Linear(d, 10)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


fabric = L.Fabric(accelerator="cpu", devices=1, precision="32-true")
fabric.seed_everything(0, verbose=False)
net = Net()
model, opt = fabric.setup(net, torch.optim.AdamW(net.parameters(), lr=1e-3))
data = TensorDataset(torch.randn(1024, 256), torch.randint(0, 10, (1024,)))
loader = fabric.setup_dataloaders(DataLoader(data, batch_size=64, shuffle=True))
for epoch in range(2):
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        fabric.backward(loss)
        opt.step()
    fabric.print(f"epoch {epoch} loss {loss.item():.4f}")
"""


def test_a_fabric_model_is_named_as_the_model_it_wraps(tmp_path):
    # GIVEN a Fabric loop: fabric.setup() wrapped the model in a _FabricModule
    script = write(tmp_path / "fabric_loop.py", FABRIC)
    out = tmp_path / "run"
    # WHEN profiled, THEN it prints what it does without dsprof
    res = runs_as_without_dsprof(script, out)
    assert "epoch 1 loss" in res.stdout
    # AND the meta says a Fabric model ran, which gives Fabric's switches
    assert "lightning.fabric.setup" in meta(out)["frameworks"]
    with load(out) as run:
        # AND its modules are named as the script names them: the model's class, then its
        # attributes (not _FabricModule._forward_module.blocks.0)
        names = {n for (n,) in run.sql("SELECT DISTINCT name FROM modules")} | {
            m for (m,) in run.sql("SELECT DISTINCT module FROM ops WHERE module IS NOT NULL")}
        assert {"Net", "Net.blocks.0", "Net.blocks.1.fc", "Net.head"} <= names
        assert not [n for n in names if "_forward_module" in n or "Fabric" in n]
        # AND the wrapper's call of the model is not a second call of it: the model ran as
        # often as its head, and its forward time holds its blocks' once
        calls = dict(run.sql("SELECT name, sum(calls) FROM modules GROUP BY name"))
        assert calls["Net"] == calls["Net.head"] > 0
        fwd = dict(run.sql("SELECT name, sum(fwd_ns) FROM modules GROUP BY name"))
        assert fwd["Net.blocks.0"] + fwd["Net.blocks.1"] + fwd["Net.head"] <= fwd["Net"] \
            < 1.5 * (fwd["Net.blocks.0"] + fwd["Net.blocks.1"] + fwd["Net.head"])
        findings = analyze(run, write=False).findings
    # AND the hand GELU's fix and knob name the blocks as the script reaches them
    (gelu,) = [f for f in findings if f.kind == "fusion.hand_gelu"]
    assert "model.blocks[i].compile()" in gelu.fix, gelu.fix
    assert gelu.apply == {"DS_COMPILE": "Net.blocks.0,Net.blocks.1"}, gelu.apply
