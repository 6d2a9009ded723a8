"""skorch: ``NeuralNetClassifier(module, optimizer=torch.optim.AdamW, callbacks=[Checkpoint])``
fit with its internal validation split and printed epoch table. It runs as without dsprof;
its steps are the training batches; the epoch-end validation and checkpoint are named as
such with skorch's own switches, and the optimizer's switch goes to the net with the
``optimizer__`` prefix (the script builds no optimizer)."""

from __future__ import annotations

import re

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import dsprof, meta, plain, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

pytest.importorskip("skorch")

SKORCH = """
import os
import sys
import numpy as np
import torch
from sklearn.datasets import make_classification
from skorch import NeuralNetClassifier
from skorch.callbacks import Checkpoint

os.chdir(sys.argv[1])
torch.manual_seed(0)
X, y = make_classification(n_samples=4000, n_features=40, n_informative=20, n_classes=4,
                           random_state=0)
X, y = X.astype(np.float32), y.astype(np.int64)
module = torch.nn.Sequential(torch.nn.Linear(40, 512), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                             torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 4))
net = NeuralNetClassifier(module, max_epochs=6, lr=1e-3, batch_size=128,
                          optimizer=torch.optim.AdamW, criterion=torch.nn.CrossEntropyLoss,
                          iterator_train__shuffle=True,
                          callbacks=[Checkpoint(dirname="ckpt", monitor="valid_loss_best")])
net.fit(X, y)
print("train acc", round(float((net.predict(X) == y).mean()), 4))
"""


def _timeless(text: str) -> str:
    return re.sub(r"\d+\.\d{4}$", "T", text, flags=re.MULTILINE)  # the table's dur column


def test_skorch_fit_gets_skorchs_switches(tmp_path):
    # GIVEN skorch's fit: 25 batches an epoch for 6 epochs, validating on its 20 % split and
    # saving a checkpoint at each epoch's end (the validation loss improves every epoch)
    script = write(tmp_path / "skorch_fit.py", SKORCH)
    (tmp_path / "plain").mkdir()
    (tmp_path / "ds").mkdir()
    bare = plain(script, str(tmp_path / "plain"))
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), str(tmp_path / "ds"))
    # THEN it runs as without dsprof: the same table but for its durations, the same files
    assert bare.returncode == 0, bare.stderr
    assert res.code == 0, res.stderr
    assert _timeless(res.stdout) == _timeless(bare.stdout) and "train acc" in res.stdout
    for name in ("params.pt", "optimizer.pt"):
        assert (tmp_path / "ds" / "ckpt" / name).read_bytes() == (
            tmp_path / "plain" / "ckpt" / name).read_bytes()
    assert "skorch" in meta(out)["frameworks"]
    with load(out) as run:
        # AND every training batch is a step
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 25 * 6
        findings = analyze(run, write=False).findings
    # AND the epoch ends are the validation (and the checkpoint), the script's own work, cut
    # with skorch's switches: at their stride of 25 steps, or, where a loaded machine's slow
    # steps hid the stride, as steps that ran another DataLoader's pass
    own = [f for f in findings if f.kind in ("steps.periodic", "steps.extra_work")]
    assert own, [f.title for f in findings]
    f = own[0]
    title = " ".join(f.title.split())
    assert f.saving_s == 0 and "ValidSplit(10)" in f.fix and "if step %" not in f.fix
    if f.kind == "steps.periodic":
        assert "Every 25 steps" in title and "an evaluation (a pass over another DataLoader" in title
        assert "Checkpoint(..., monitor=" in f.fix
    else:
        assert "a pass over another loader (an evaluation)" in title, title
    # AND no fix builds an optimizer or a loop the script does not have
    for f in findings:
        assert "model.parameters()" not in f.fix and "running_loss" not in f.fix, f.title
    fused = [f for f in findings if f.kind == "fusion.optimizer"]
    assert all("optimizer__" in f.fix for f in fused), [f.fix for f in fused]
