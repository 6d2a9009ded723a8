"""pytorch-ignite's supervised trainer with an evaluator run every 12 iterations by an
``Events.ITERATION_COMPLETED(every=12)`` handler and a ``ModelCheckpoint`` on the evaluator:
runs as without dsprof (output, checkpoint files), its steps are the trainer's iterations, the
periodic steps are named as evaluation and checkpointing with Ignite's event filter as the
switch, and the per-iteration ``loss.item()`` of Ignite's default ``output_transform`` gets
Ignite's switch, not a hand loop's."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import dsprof, meta, plain, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

pytest.importorskip("ignite")

IGNITE = """
import os
import sys
import torch
from torch.utils.data import DataLoader, TensorDataset
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers import ModelCheckpoint
from ignite.metrics import Accuracy, Loss

torch.manual_seed(0)
X = torch.randn(2048, 64)
y = (X @ torch.randn(64, 10)).argmax(1)
train = DataLoader(TensorDataset(X[:1536], y[:1536]), batch_size=32, shuffle=True)
val = DataLoader(TensorDataset(X[1536:], y[1536:]), batch_size=128)
model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                            torch.nn.ReLU(), torch.nn.Linear(512, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = torch.nn.CrossEntropyLoss()
trainer = create_supervised_trainer(model, optimizer, criterion)
evaluator = create_supervised_evaluator(model, metrics={"acc": Accuracy(), "loss": Loss(criterion)})
out = sys.argv[1]
checkpoint = ModelCheckpoint(out, "mlp", n_saved=2, require_empty=False,
                             score_function=lambda e: e.state.metrics["acc"], score_name="acc")
evaluator.add_event_handler(Events.COMPLETED, checkpoint, {"model": model})


@trainer.on(Events.ITERATION_COMPLETED(every=12))
def validate(engine):
    evaluator.run(val)
    m = evaluator.state.metrics
    print(f"iter {engine.state.iteration} val acc {m['acc']:.3f} loss {m['loss']:.4f}", flush=True)


trainer.run(train, max_epochs=2)
print("saved", sorted(os.listdir(out)))
"""


def test_ignite_evaluation_and_checkpoints_get_ignites_switches(tmp_path):
    # GIVEN an Ignite trainer that evaluates and checkpoints every 12 of its 96 iterations
    script = write(tmp_path / "ignite_loop.py", IGNITE)
    bare = plain(script, str(tmp_path / "plain_ckpt"))
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), str(tmp_path / "ckpt"))
    # THEN it runs as without dsprof: same output, the same checkpoint files byte for byte
    assert bare.returncode == 0, bare.stderr
    assert res.code == 0, res.stderr
    assert res.stdout == bare.stdout and "iter 96 val acc" in res.stdout
    saved = sorted(p.name for p in (tmp_path / "plain_ckpt").iterdir())
    assert len(saved) == 2
    for name in saved:
        assert (tmp_path / "ckpt" / name).read_bytes() == (tmp_path / "plain_ckpt" / name
                                                           ).read_bytes()
    assert "ignite" in meta(out)["frameworks"]
    with load(out) as run:
        # AND its steps are the trainer's 96 iterations (the evaluator's forwards add none)
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 96
        findings = analyze(run, write=False).findings
    # AND the slow steps every 12 iterations are the evaluation and the checkpoint, cut with
    # Ignite's event filter, not a hand loop's `if step % N`
    # (named by the metrics' lines that ran only then, or by the evaluator's pass over its own
    # DataLoader; where a loaded machine's slow steps hid the stride, as that pass alone)
    own = [f for f in findings if f.kind in ("steps.periodic", "steps.extra_work")]
    assert own, [f.title for f in findings]
    f = own[0]
    title = " ".join(f.title.split())
    assert "evaluation" in title and not f.saving_s and "if step %" not in f.fix
    if f.kind == "steps.periodic":
        assert "Every 12 steps" in title, title
        assert "ignite/metrics/" in title or "a pass over another DataLoader" in title, title
        assert "Events.ITERATION_COMPLETED(every=48)" in f.fix
    else:
        assert "Events.ITERATION_COMPLETED(every=N)" in f.fix, f.fix
    # AND the per-iteration item() in Ignite's code is cut with the trainer's output_transform
    syncs = [f for f in findings if f.kind == "host_sync.call" and "ignite/engine" in f.title]
    assert syncs and "output_transform=" in syncs[0].fix, [f.title for f in findings]
    assert "running_loss" not in syncs[0].fix
