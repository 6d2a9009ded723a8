"""An evaluation that lands once in the counted steps (no stride to call periodic): the step
that ran it is the script's own work, named with the line only it ran, not a saving
(analyzers/step_outliers.py ``steps.extra_work``). Seen on a ``Seq2SeqTrainer`` evaluating every
12 steps, once in its 24 counted steps: it read as outliers "that did more work", with their
excess as a saving."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import dsprof, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

ONE_EVALUATION = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
val = [torch.randn(512, 64) for _ in range(40)]
for step in range(24):
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    if step == 15:
        with torch.no_grad():
            score = sum(model(v).logsumexp(-1).mean().item() for v in val)  # EVAL LINE
        print(f"eval {score / len(val):.3f}")
    opt.step()
print("done")
"""


def test_a_single_evaluation_step_is_the_scripts_work_not_a_saving(tmp_path):
    # GIVEN 24 steps, one of which (loop step 15) evaluates 40 batches with .item() on each
    script = write(tmp_path / "one_eval.py", ONE_EVALUATION)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script))
    assert res.code == 0, res.stderr
    with load(out) as run:
        found = [f for f in analyze(run, only=("step_outliers",), write=False).findings]
    # THEN that step is named as the script's extra work, with the line only it ran, no saving
    (f,) = [f for f in found if f.kind == "steps.extra_work"]
    line = 1 + next(i for i, ln in enumerate(ONE_EVALUATION.splitlines()) if "EVAL LINE" in ln)
    assert f"one_eval.py:{line}" in f.title, f.title
    assert f.saving_s == 0 and f.severity == "info"
    assert len(f.data["steps"]) == 1 and "not a saving" in f.title
    assert not [g for g in found if g.kind == "steps.outliers"]


ONE_LOADER_EVALUATION = """
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
train = DataLoader(TensorDataset(torch.randn(24 * 32, 64), torch.randint(0, 10, (24 * 32,))),
                   batch_size=32)
val = DataLoader(TensorDataset(torch.randn(40 * 512, 64)), batch_size=512)
for step, (x, y) in enumerate(train):
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    if step == 15:
        with torch.no_grad():
            score = sum(model(v).logsumexp(-1).mean().item() for (v,) in val)  # EVAL LINE
        print(f"eval {score / len(val):.3f}")
    opt.step()
print("done")
"""


def test_an_evaluation_with_its_own_line_over_another_loader_is_named_an_evaluation(tmp_path):
    # GIVEN one step (loop step 15) that evaluates over a validation DataLoader, reading each
    # batch's metric with .item() (the HF Trainer's eval loop: its lines ran only there)
    script = write(tmp_path / "loader_eval.py", ONE_LOADER_EVALUATION)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script))
    assert res.code == 0, res.stderr
    with load(out) as run:
        found = analyze(run, only=("step_outliers",), write=False).findings
    # THEN it is named as an evaluation over another loader, with the line only it ran
    (f,) = [f for f in found if f.kind == "steps.extra_work"]
    assert "a pass over another loader (an evaluation)" in f.title, f.title
    line = 1 + next(i for i, ln in enumerate(ONE_LOADER_EVALUATION.splitlines())
                    if "EVAL LINE" in ln)
    assert any(f"loader_eval.py:{line}" in e.text for e in f.evidence), f.evidence
    assert f.saving_s == 0 and "not a saving" in f.title


EVALUATION_AMONG_SLOW_STEPS = """
import time
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
val = [torch.randn(512, 64) for _ in range(20)]
for step in range(30):
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    if step in (13, 17, 22, 26):
        time.sleep(0.08)  # off the CPU: what another process on the machine does to a step
    if step == 20:
        with torch.no_grad():
            score = sum(model(v).logsumexp(-1).mean().item() for v in val)  # EVAL LINE
        print(f"eval {score / len(val):.3f}")
    opt.step()
print("done")
"""


def test_an_evaluation_among_slower_steps_is_still_named_the_scripts_work(tmp_path):
    # GIVEN one evaluation step (loop step 20) beside four steps that sleep 80 ms each, so
    # the evaluation carries well under EXTRA_WORK_SHARE of the outliers' excess (CI's quiet
    # machine read Keras' epoch-end validations among such steps as "6 of 162 steps are
    # outliers", a saving)
    script = write(tmp_path / "eval_among.py", EVALUATION_AMONG_SLOW_STEPS)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script))
    assert res.code == 0, res.stderr
    with load(out) as run:
        found = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the evaluation is its own verdict, the script's work with its line and no saving
    (f,) = [f for f in found if f.kind == "steps.extra_work"]
    line = 1 + next(i for i, ln in enumerate(EVALUATION_AMONG_SLOW_STEPS.splitlines())
                    if "EVAL LINE" in ln)
    assert f"eval_among.py:{line}" in f.title, f.title
    assert f.saving_s == 0 and len(f.data["steps"]) == 1
    # AND the sleeping steps are judged without it: off the CPU, noise on this machine, with
    # the evaluation named as left out of that verdict
    (g,) = [g for g in found if g.kind != "steps.extra_work"]
    assert g.kind == "steps.noise" and g.saving_s == 0, g.title
    assert f.data["steps"][0] not in g.data["steps"]
    assert "Left out as the script's own work (steps.extra_work)" in g.explanation
