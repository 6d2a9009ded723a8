"""Scripts that train one loop after another: a sweep that builds a new model and optimizer
per configuration, and an LR range test whose optimizer stays alive before the training's.
Each loop gets windows of its own; the run's step times and op-level record are the latest
loop's, and the earlier loops' windows are set aside whole (collectors/window_files.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dsprof as dsprof_api
from tests.integration.helpers import dsprof, meta, runs_as_without_dsprof, write

pytestmark = pytest.mark.slow

HEAD = """
import torch
from torch import nn

torch.manual_seed(0)
x, y = torch.randn(512, 64), torch.randint(0, 4, (512,))


def batch(step):
    i = (step * 32) % 480
    return x[i:i + 32], y[i:i + 32]


def mlp(width):
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 4))
"""

# a sweep: each configuration its own model and Adam (the last one freed when the next is made)
SWEEP = HEAD + """
for width in (32, 512):
    model = mlp(width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(40):
        loss = nn.functional.cross_entropy(model(batch(step)[0]), batch(step)[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(width, round(loss.item(), 4))
"""

# an LR range test whose SGD stays alive (a variable of the script), then the training's Adam
LR_RANGE_TEST = HEAD + """
model = mlp(128)
finder = torch.optim.SGD(model.parameters(), lr=1e-6)
for step in range(30):
    for group in finder.param_groups:
        group["lr"] = 1e-6 * 1.5 ** step
    loss = nn.functional.cross_entropy(model(batch(step)[0]), batch(step)[1])
    finder.zero_grad()
    loss.backward()
    finder.step()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for step in range(50):
    loss = nn.functional.cross_entropy(model(batch(step)[0]), batch(step)[1])
    opt.zero_grad()
    loss.backward()
    opt.step()
print("trained", round(loss.item(), 4))
"""


def _steps(run: Path) -> tuple[list[tuple[int, str | None, bool]], list[int]]:
    with dsprof_api.load(run) as r:
        rows = [(int(s), d, bool(p)) for s, d, p in r.sql(
            "SELECT step, disturbed_by, profiled FROM steps ORDER BY step")]
        counted = [int(s) for _, s, _ in r.facts.step.counted]
    return rows, counted


def _loop_starts(run: Path) -> list[int]:
    return json.loads((run / "raw" / "rank0" / "session.json").read_bytes())["loop_starts"]


def test_a_sweeps_configurations_are_loops_and_the_last_one_is_the_record(tmp_path):
    # GIVEN two configurations of 40 steps each, a narrow MLP then a wide one
    script = write(tmp_path / "sweep.py", SWEEP)
    out = tmp_path / "run"
    runs_as_without_dsprof(script, out)
    # THEN the second Adam starts a loop at step 40, which gets a window of its own, and the
    # first loop's window is set aside with its files
    assert _loop_starts(out) == [40]
    windows = meta(out)["windows"]
    assert [w["kind"] for w in windows] == ["earlier_loop", "window"]
    assert min(windows[1]["steps"]) > 41
    assert (out / "raw" / "rank0" / "earlier_loops" / "window-0.trace.json").is_file()
    rows, counted = _steps(out)
    assert [s for s, _, p in rows if p] == windows[1]["steps"]
    # AND the step times are the wide configuration's only, not a median between the two
    assert counted and min(counted) >= 42
    assert {d for s, d, _ in rows if 1 <= s < 40} == {"earlier_loop"}
    out_text = " ".join(dsprof("summary", str(out)).stdout.split())
    assert "a new optimizer took the step boundaries over at step 40" in out_text
    assert "step times and op-level findings are of the last loop, steps 40-79" in out_text
    # AND each configuration's step time stands side by side: the narrow one's by the same
    # rule over its own steps (its set-aside window, the warm-up before and the trace write
    # after left out), the wide one's the run's
    loops = json.loads(dsprof("summary", "--json", str(out)).stdout)["loops"]
    assert [(lp["loop"], lp["first_step"], lp["last_step"], lp["source"], lp["recorded"])
            for lp in loops] == [(0, 0, 39, "optimizer", False), (1, 40, 79, "optimizer", True)]
    aside = windows[0]["steps"]
    warmup = meta(out)["settings"]["warmup"]
    with dsprof_api.load(out) as r:
        narrow, wide = r.facts.loops
        assert [s for _, s, _ in narrow.step.counted] == [
            s for s in range(2, 40) if not min(aside) - warmup <= s <= max(aside) + 1]
        assert wide.step.counted == r.facts.step.counted
        assert loops[1]["median_ms"] == pytest.approx(r.facts.step.median_s * 1e3)
    cells = " ".join(out_text.replace("│", " ").split())
    assert "Step time by loop" in cells
    assert f"0 0-39 optimizer {len(narrow.step.counted)} " in cells
    assert f"1 * 40-79 optimizer {len(wide.step.counted)} " in cells


def test_the_training_after_an_lr_range_test_is_the_record(tmp_path):
    # GIVEN a 30-step LR range test whose optimizer stays alive, then 50 training steps
    script = write(tmp_path / "lr_range_test.py", LR_RANGE_TEST)
    out = tmp_path / "run"
    runs_as_without_dsprof(script, out)
    # THEN the training is a loop of its own from step 30 (its first 30 steps found after the
    # fact, when the range test's optimizer was seen to have stopped), profiled in its window
    assert _loop_starts(out) == [30]
    windows = meta(out)["windows"]
    assert [w["kind"] for w in windows] == ["earlier_loop", "window"]
    assert min(windows[1]["steps"]) > 30
    rows, counted = _steps(out)
    assert counted and min(counted) >= 32
    assert {d for s, d, _ in rows if 1 <= s < 30} == {"earlier_loop"}


# pre-training whose Adam the script keeps, then fine-tuning the head for fewer steps: the
# head's SGD never steps as long a run as the Adam led, and no other optimizer follows it
FINE_TUNE = HEAD + """
model = mlp(64)
pre = torch.optim.Adam(model.parameters(), lr=1e-3)
for step in range(60):
    loss = nn.functional.cross_entropy(model(batch(step)[0]), batch(step)[1])
    pre.zero_grad()
    loss.backward()
    pre.step()
head = torch.optim.SGD(model[-1].parameters(), lr=1e-2)
for step in range(20):
    loss = nn.functional.cross_entropy(model(batch(step)[0]), batch(step)[1])
    head.zero_grad()
    loss.backward()
    head.step()
print("tuned", round(loss.item(), 4))
"""

# a first fit whose optimizer stays alive, then three shorter fits of a search, each its own
# model and optimizer (a grid search's clones)
SEARCH = HEAD + """
best = mlp(64)
kept = torch.optim.Adam(best.parameters(), lr=1e-3)
for step in range(60):
    loss = nn.functional.cross_entropy(best(batch(step)[0]), batch(step)[1])
    kept.zero_grad()
    loss.backward()
    kept.step()
for width in (16, 32, 48):
    model = mlp(width)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    for step in range(20):
        loss = nn.functional.cross_entropy(model(batch(step)[0]), batch(step)[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(width, round(loss.item(), 4))
"""


def test_a_shorter_loop_after_a_kept_optimizer_is_recorded_at_exit(tmp_path):
    # GIVEN 60 pre-training steps whose optimizer stays alive, then 20 of fine-tuning
    script = write(tmp_path / "fine_tune.py", FINE_TUNE)
    out = tmp_path / "run"
    runs_as_without_dsprof(script, out)
    # THEN the fine-tuning's 20 steps are steps, a loop of their own found at exit (they
    # were lost: the run ended at step 59, and said nothing)
    assert _loop_starts(out) == [60]
    rows, _ = _steps(out)
    assert [s for s, _, _ in rows] == list(range(80))


def test_a_searchs_shorter_fits_after_a_kept_optimizer_are_loops(tmp_path):
    # GIVEN a 60-step fit whose optimizer stays alive, then three fits of 20 steps each
    script = write(tmp_path / "search.py", SEARCH)
    out = tmp_path / "run"
    runs_as_without_dsprof(script, out)
    # THEN every fit is a loop: the first two found when the next one's optimizer stepped,
    # the last at exit (the 60 steps of the search were lost)
    assert _loop_starts(out) == [60, 80, 100]
    rows, _ = _steps(out)
    assert [s for s, _, _ in rows] == list(range(120))
