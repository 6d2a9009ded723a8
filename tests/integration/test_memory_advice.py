"""Memory advice proven end to end: a real run predicts, a second real run measures.

A small Transformer LM fed by a DataLoader (benchmarks/_memory_models.py) on CPU: the
checkpointing finding's plan is applied with DS_GRADIENT_CHECKPOINTING and its measured peak
is within 5 % of the predicted one; `dsprof tune batch-size` then probes the advised batch
through DS_BATCH_SIZE and its measured peak fits the budget, within 5 % of the prediction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsprof.analyzers.checkpointing import Checkpointing
from dsprof.analyzers.registry import Context
from dsprof.run import load
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SCRIPT = REPO / "benchmarks" / "_memory_models.py"
TARGET = [str(SCRIPT), "--model", "transformer", "--size", "small", "--batch-size", "8",
          "--steps", "3"]
WINDOW = ["--wait", "0", "--warmup", "1", "--active", "1"]


def _run(out: Path, env: dict[str, str] | None = None) -> Path:
    proc = subprocess.run([sys.executable, "-m", "dsprof", "run", "-q", "-o", str(out), *WINDOW,
                           *TARGET], env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _peak(path: Path) -> int:
    with load(path) as run:
        return int(run.sql("SELECT max(total) FROM memory_series")[0][0])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("memadvice") / "base")


def test_checkpointing_plan_applied_meets_its_prediction(baseline, tmp_path):
    # GIVEN the baseline analyzed against a budget 15 % under its peak
    peak0 = _peak(baseline)
    with load(baseline) as run:
        ctx = Context(run)
        ctx.meta = {**run.meta, "settings": {**run.meta["settings"],
                                             "memory_budget": int(peak0 * 0.85)}}
        [finding] = Checkpointing().run(ctx)
    knob = finding.apply["DS_GRADIENT_CHECKPOINTING"]
    predicted = finding.data["advised"]["peak"]
    assert predicted <= peak0 * 0.85 and finding.saving_bytes == peak0 - predicted
    assert "use_reentrant=False" in finding.fix
    front = finding.data["front"]
    assert front[0]["modules"] == [] and len(front) >= 2
    # WHEN the plan runs through the knob, no script change
    after = _run(tmp_path / "ckpt", {"DS_GRADIENT_CHECKPOINTING": knob})
    # THEN the measured peak is the predicted one within 5 %
    measured = _peak(after)
    assert abs(measured / predicted - 1) < 0.05, (knob, measured, predicted, peak0)
    # and dsprof diff shows the drop where it happened: the activations at the peak
    proc = subprocess.run([sys.executable, "-m", "dsprof", "diff", str(baseline), str(after)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "peak memory (live bytes)" in proc.stdout and "activation at the peak" in proc.stdout


def test_tune_batch_size_probes_the_advised_batch(baseline, tmp_path):
    # GIVEN a budget twice the baseline's peak
    budget = 2 * _peak(baseline)
    # WHEN dsprof tune batch-size predicts from the baseline and probes once
    proc = subprocess.run(
        [sys.executable, "-m", "dsprof", "tune", "batch-size", "--baseline", str(baseline),
         "--memory-budget", str(budget), "--probes", "1", "-o", str(tmp_path), "--json",
         *TARGET], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    [probe] = result["probes"]
    # THEN the probe ran at the advised batch (DataLoader changed by DS_BATCH_SIZE), fit the
    # budget, and peaked where predicted
    assert probe["batch"] > 8 and probe["batch"] == result["advised_batch"]
    assert probe["exit_status"] == 0 and probe["peak"] <= budget
    assert abs(probe["peak"] / probe["predicted_peak"] - 1) < 0.05
    with load(Path(probe["run"])) as run:
        assert run.sql("SELECT min(batch_size), max(batch_size) FROM steps")[0] == \
            (probe["batch"], probe["batch"])


def test_tune_batch_size_says_why_without_a_budget(baseline, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dsprof", "tune", "batch-size", "--baseline", str(baseline),
         "-o", str(tmp_path), *TARGET], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "dsprof: error:" in proc.stderr and "--memory-budget" in proc.stderr
    assert "Traceback" not in proc.stderr
