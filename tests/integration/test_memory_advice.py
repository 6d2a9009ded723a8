"""Memory advice proven end to end: a real run predicts, a second real run measures.

A small Transformer LM fed by a DataLoader (benchmarks/_memory_models.py) on CPU: a run stopped
by --memory-budget gets a checkpointing finding, `dsprof run --apply` applies it
(DS_GRADIENT_CHECKPOINTING) and the new run fits with the predicted peak within 5 %;
`dsprof tune batch-size` probes the advised batch through DS_BATCH_SIZE and its measured peak
fits the budget, within 5 % of the prediction.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dsprof.run import load
from tests.conftest import REPO
from tests.machine_share import recording

pytestmark = [pytest.mark.slow, pytest.mark.timed_runs]

SCRIPT = REPO / "benchmarks" / "_memory_models.py"
TARGET = [str(SCRIPT), "--model", "transformer", "--size", "small", "--batch-size", "8",
          "--steps", "3"]
WINDOW = ["--wait", "0", "--warmup", "1", "--active", "1"]


def _run(out: Path, args: tuple[str, ...] | list[str] = (), ok: bool = True,
         analyzed: bool = True) -> Path:
    # (a run whose findings no test reads is not analysed: CI's time)
    flags = [] if analyzed else ["--no-analyze"]
    with recording():
        proc = subprocess.run([sys.executable, "-m", "dsprof", "run", "-q", *flags, "-o", str(out),
                               *WINDOW, *args, *TARGET], capture_output=True, text=True,
                              check=False)
    assert (proc.returncode == 0) == ok, proc.stderr[-3000:]
    return out


def _peak(path: Path) -> int:
    with load(path) as run:
        return int(run.sql("SELECT max(total) FROM memory_series")[0][0])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("memadvice") / "base", analyzed=False)


def test_over_budget_run_gets_a_checkpoint_plan_that_applies_and_fits(baseline, tmp_path):
    # GIVEN a run stopped by a budget 15 % under the script's peak (as an out-of-memory would)
    peak0 = _peak(baseline)
    budget = int(peak0 * 0.85)
    stopped = tmp_path / "stopped"
    _run(stopped, args=["--memory-budget", str(budget)], ok=False)
    # THEN its findings say which modules to checkpoint, the predicted peak and the cost
    findings = json.loads((stopped / "findings.json").read_text())["findings"]
    [ckpt] = [f for f in findings if f["kind"] == "memory.checkpointing"]
    predicted = ckpt["data"]["advised"]["peak"]
    assert predicted <= budget and ckpt["saving_bytes"] == peak0 - predicted
    assert "use_reentrant=False" in ckpt["fix"] and ckpt["apply"]["DS_GRADIENT_CHECKPOINTING"]
    front = ckpt["data"]["front"]
    assert front[0]["modules"] == [] and front[-1]["peak"] < predicted <= front[0]["peak"]
    # WHEN the same command runs again with the finding applied (no script change)
    fixed = tmp_path / "fixed"
    _run(fixed, args=["--memory-budget", str(budget), "--apply", ckpt["id"],
                      "--baseline", str(stopped)], analyzed=False)
    # THEN it fits, the measured peak is the predicted one within 5 %, and dsprof diff sets
    # the predicted saving beside the measured one, with the activations that went
    measured = _peak(fixed)
    assert measured <= budget and abs(measured / predicted - 1) < 0.05, (measured, predicted)
    with load(fixed) as run:
        assert run.meta["knobs"]["DS_GRADIENT_CHECKPOINTING"]["checkpointed"]
    proc = subprocess.run([sys.executable, "-m", "dsprof", "diff", "--json", str(stopped),
                           str(fixed)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    diff = json.loads(proc.stdout)
    [applied] = diff["applied"]
    assert applied["predicted_saving_bytes"] == peak0 - predicted
    assert abs(applied["measured_saving_bytes"] / applied["predicted_saving_bytes"] - 1) < 0.2
    assert diff["b"]["peak_by_category"]["activation"] < diff["a"]["peak_by_category"]["activation"]


def test_tune_batch_size_probes_the_advised_batch(baseline, tmp_path):
    # GIVEN a budget twice the baseline's peak
    budget = 2 * _peak(baseline)
    # WHEN dsprof tune batch-size predicts from the baseline and probes once
    with recording():  # the probe is a run
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
