"""A checkpoint saved once in the middle of a run: its step is the script's own work, named
with the save (analyzers/step_saves.one_off_saves), not "nothing dsprof saw it do differently"
nor machine noise (a mid-run save and an HF Trainer's one save in 60 steps read so)."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import dsprof, runs_as_without_dsprof, write

ONE_SAVE = '''
import sys

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
archive = torch.randn(4096, 4096)  # 64 MiB the checkpoint carries along
x, y = torch.randn(32, 64), torch.randn(32, 4)
for step in range(40):
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step == 24:  # one checkpoint in the middle of the run
        torch.save({"model": model.state_dict(), "archive": archive}, sys.argv[1])
print("done", round(loss.item(), 4))
'''


@pytest.mark.timing
def test_a_step_that_saved_a_checkpoint_once_is_named_by_the_save(tmp_path):
    script = write(tmp_path / "one_save.py", ONE_SAVE)
    run = tmp_path / "run"
    runs_as_without_dsprof(script, run, str(tmp_path / "mid.pt"))
    res = dsprof("analyze", str(run), "--json")
    assert res.code == 0, res.stderr[-2000:]
    outliers = [f for f in json.loads(res.stdout)["findings"] if f["kind"].startswith("steps.")]
    # THEN the step after step 24's end (the save runs after its optimizer step) is the save
    matches = [f for f in outliers if 25 in f["data"].get("steps", [])]
    assert len(matches) == 1, [(f["kind"], f["title"]) for f in outliers]
    (f,) = matches
    assert f["kind"] == "steps.extra_work" and f["saving_s"] == 0
    assert "saving a checkpoint (torch.save at" in f["title"] and "one_save.py:18" in f["title"]
    assert "async_save" in f["fix"]
