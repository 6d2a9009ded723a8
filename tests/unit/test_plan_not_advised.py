"""A finding dsprof does not apply (a what-if, not advised on this run) is refused by verify
with the command that measures it anyway, where its verify line has one."""

from __future__ import annotations

import json

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.apply.plan import plan
from dsprof.errors import ConfigError
from dsprof.findings import Finding
from dsprof.run import load
from tests.unit.test_noise import make_run


def _with(run_dir, finding: Finding) -> str:
    with load(run_dir) as run:
        analyze(run)
    doc = json.loads((run_dir / "findings.json").read_text())
    entry = finding.to_json()
    doc["findings"].append(entry)
    (run_dir / "findings.json").write_text(json.dumps(doc))
    return str(entry["id"])


def test_a_what_if_names_the_command_that_measures_it(tmp_path):
    run = make_run(tmp_path / "run", [10.0] * 12)
    what_if = Finding(
        analyzer="checkpointing", kind="memory.checkpointing", key="plan",
        title="Checkpoint 2 blocks: peak 11.29 MiB -> 6.34 MiB (not advised)",
        fix="checkpoint_modules(model, ['Net.blocks.*'])",
        verify="DS_GRADIENT_CHECKPOINTING='Net.blocks.*' dsprof run train.py")
    fid = _with(run, what_if)
    with pytest.raises(ConfigError) as err:
        plan([fid], run, tmp_path)
    said = str(err.value)
    # THEN it says why verify does not apply it, and how to measure it by hand
    assert "not advised on this run" in said
    assert "DS_GRADIENT_CHECKPOINTING='Net.blocks.*' dsprof run train.py" in said
    assert "apply it by hand" not in said


def test_a_fix_with_no_knob_is_to_apply_by_hand(tmp_path):
    run = make_run(tmp_path / "run", [10.0] * 12)
    fid = _with(run, Finding(analyzer="host_syncs", kind="host_sync.call", key="k",
                             title="Remove the per-step .item()", fix="loss_sum += loss.detach()",
                             verify="dsprof run ... and compare host_syncs"))
    with pytest.raises(ConfigError, match="apply it by hand: loss_sum"):
        plan([fid], run, tmp_path)
