"""A run directory is never trusted: a ``dsprof run``'s directory whose steps table is gone
(ops and the rest still there) is analyzed and summarized with stated reasons, never a
traceback or an analyzer that failed on the missing table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.helpers import REPO, dsprof

pytestmark = [pytest.mark.slow, pytest.mark.timed_runs]

ARGS = ("--steps", "8", "--batch-size", "256", "--width", "64")
WINDOW = ("--wait", "1", "--warmup", "1", "--active", "2")


@pytest.fixture(scope="module")
def no_steps_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nosteps") / "mlp"
    res = dsprof("run", "-q", "-o", str(out), *WINDOW,
                 str(REPO / "examples" / "fusion_mlp.py"), *ARGS)
    assert res.code == 0, res.stderr
    tables = out / "tables"
    gone = [p for p in tables.iterdir() if p.name.split(".")[0] == "steps"]
    assert gone and any(p.name.split(".")[0] == "ops" for p in tables.iterdir())
    for p in gone:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    for name in ("findings.json", "reports"):
        p = out / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return out


def test_analyze_states_why_instead_of_failing(no_steps_run):
    res = dsprof("analyze", str(no_steps_run), "--json")
    assert res.code == 0, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    doc = json.loads(res.stdout)
    # THEN no analyzer failed (input_pipeline, host_syncs, fusion and checkpointing read the
    # steps table through metrics.fullspeed / metrics.memory before)
    assert doc["failed"] == []
    skipped = {s["analyzer"]: s["reason"] for s in doc["skipped"]}
    assert "no steps table" in skipped["host_syncs"]
    assert skipped["step_outliers"] == "needs the steps table"
    # AND fusion still finds the hand-written GELU, per capture (no step to divide by)
    assert any(f["kind"] == "fusion.hand_gelu" for f in doc["findings"])
    # AND the run's note says why nothing is counted per step
    assert any(n["kind"] == "incomplete" and "no steps table" in n["text"]
               for n in doc["notes"])


def test_summary_says_the_steps_table_is_missing(no_steps_run):
    res = dsprof("summary", str(no_steps_run), env={"COLUMNS": "200"})
    assert res.code == 0, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert " failed" not in res.stdout
    assert "the run directory has no steps table" in res.stdout
    assert "Top ops by self time" in res.stdout
