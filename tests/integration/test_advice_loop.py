"""Fusion findings on real `dsprof run`s of the examples, and the apply/verify loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dsprof
from dsprof.analyzers.registry import analyze
from dsprof.metrics.fullspeed import full_speed_steps, profiler_cost_per_op
from tests.integration.helpers import REPO, meta
from tests.integration.helpers import dsprof as run_dsprof

pytestmark = [pytest.mark.slow, pytest.mark.timed_runs]

EXAMPLES = REPO / "examples"
MLP_ARGS = ("--steps", "8", "--batch-size", "1024", "--width", "64")
WINDOW = ("--wait", "1", "--warmup", "1", "--active", "2")
GELU = ["pow", "mul", "add", "mul", "mul", "tanh", "add", "mul"]


def findings_of(run: Path) -> dict[str, dict]:
    with dsprof.load(run) as loaded:
        analysis = analyze(loaded)
    return {f.kind: f.to_json() for f in analysis.findings} | {
        "_skipped": {s["analyzer"]: s["reason"] for s in analysis.skipped}}


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("advice") / "mlp"
    res = run_dsprof("run", "-q", "--no-analyze", "-o", str(out), *WINDOW, str(EXAMPLES / "fusion_mlp.py"),
                     *MLP_ARGS)
    assert res.code == 0, res.stderr
    return out


def test_fusion_findings_name_the_module_the_chain_and_a_saving(mlp_run):
    # GIVEN a run of the MLP with a hand-written GELU, RMSNorm and the default AdamW
    # WHEN it is analyzed
    found = findings_of(mlp_run)
    # THEN the GELU chain is named with both blocks' act modules, its 8 ops and a saving
    gelu = found["fusion.hand_gelu"]
    assert gelu["data"]["modules"] == ["FusionMLP.blocks.0.act", "FusionMLP.blocks.1.act"]
    assert gelu["data"]["ops"] == GELU
    assert gelu["saving_s"] > 0 and gelu["data"]["bytes_fused"] < gelu["data"]["bytes_unfused"]
    # the chain is each act module's whole forward: the knob runs the pasted F.gelu there
    assert gelu["apply"] == {
        "DS_LIBRARY_OP": "FusionMLP.blocks.0.act=gelu_tanh,FusionMLP.blocks.1.act=gelu_tanh"}
    assert "DS_LIBRARY_OP" in gelu["verify"] and "compile" not in gelu["verify"]
    assert "F.gelu" in gelu["title"] and "approximate=\"tanh\"" in gelu["fix"]
    # AND the RMSNorm chain is named as such, with no saving on CPU (aten::rms_norm's CPU
    # backward is the composite of the same ops)
    norm = found["fusion.hand_norm"]
    assert norm["data"]["ops"] == ["pow", "mean", "add", "rsqrt", "mul", "mul"]
    assert "nn.RMSNorm" in norm["title"] and norm["saving_s"] == 0
    assert norm["data"]["impact_unknown"] == "rms_norm on CPU"
    assert norm["apply"] == {
        "DS_LIBRARY_OP": "FusionMLP.blocks.0.norm=rms_norm,FusionMLP.blocks.1.norm=rms_norm"}
    # AND AdamW's per-parameter loop is named with the fused knob
    opt = found["fusion.optimizer"]
    assert opt["apply"] == {"DS_OPTIMIZER_FUSED": "1"} and opt["saving_s"] > 0
    # AND the bandwidth was measured at session start; the CPU GELU swap is priced at the
    # costs measured in training, not at it (metrics/ops/library_cost.py)
    assert meta(mlp_run)["host_bandwidth"]["bytes_per_s"] > 1e8
    assert "measured in training at full speed" in gelu["explanation"]
    # AND so was the library GELU's own rate, on the run's one thread, and it is the one the
    # swap's price subtracts (collectors/library_pace.py)
    pace = meta(mlp_run)["library_pace"]
    assert pace["threads"] == 1 and all(0 < r < 50e-9 for r in pace["gelu_tanh"])
    assert gelu["data"]["library_s_per_element"] == pace["gelu_tanh"]
    assert gelu["data"]["library_cost_source"] == "timed at session start"
    # AND precision advice is skipped on a CPU run, with the reason
    assert "no GPU kernels" in found["_skipped"]["precision"]
    # AND full speed means after step 1 and outside the window (steps 3-4, warm-up 2, save 5),
    # and the profiler's cost per recorded op is measured (a few microseconds at most)
    with dsprof.load(mlp_run) as run:
        assert [s for s, _ in full_speed_steps(run)] == [6, 7]
        assert 0 < profiler_cost_per_op(run) < 20e-6


def test_apply_errors_are_one_line(mlp_run, tmp_path):
    script = str(EXAMPLES / "fusion_mlp.py")
    res = run_dsprof("run", "-o", str(tmp_path / "x"), "--apply", "fusion-nope", "--baseline",
                     str(mlp_run), script)
    assert res.code == 2 and "has no single finding 'fusion-nope'" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_dsprof("run", "-o", str(tmp_path / "y"), "--baseline", str(mlp_run), script)
    assert res.code == 2 and "--baseline goes with --apply" in res.stderr


APPLIED_PROBE = """
import os
import sys
print("loaded at start:", sorted({"torch", "numpy", "pyarrow", "duckdb"} & set(sys.modules)))
print("plan in the environment:", "DSPROF_APPLIED_PLAN" in os.environ)
import torch
model = torch.nn.Linear(8, 1)
opt = torch.optim.AdamW(model.parameters())
for _ in range(4):
    model(torch.ones(2, 8)).sum().backward()
    opt.step()
    opt.zero_grad()
"""


def test_an_applied_run_gives_the_script_what_a_plain_run_gives_it(mlp_run, tmp_path):
    # GIVEN the baseline's optimizer finding, applied to a script that looks at what is
    # loaded at its first line (planning analyzed the baseline: numpy, pyarrow, DuckDB)
    probe = tmp_path / "probe.py"
    probe.write_text(APPLIED_PROBE)
    found = findings_of(mlp_run)
    out = tmp_path / "applied"
    res = run_dsprof("run", "-q", "--no-analyze", "-o", str(out), "--apply", found["fusion.optimizer"]["id"],
                     "--baseline", str(mlp_run), str(probe))
    assert res.code == 0, res.stderr
    # THEN the script meets a process that loaded none of them, as a plain dsprof run's
    # script does (the planning process started over), and no trace of the hand-over
    assert "loaded at start: []" in res.stdout and "plan in the environment: False" in res.stdout
    # AND the plan and its knob came through: recorded, and AdamW switched to fused
    m = meta(out)
    assert [f["id"] for f in m["applied"]["findings"]] == [found["fusion.optimizer"]["id"]]
    assert m["knobs"]["DS_OPTIMIZER_FUSED"]["switched"] == ["AdamW"]
    assert "DSPROF_APPLIED_PLAN" not in m["env"]


def test_verify_applies_both_knobs_and_prints_predicted_vs_measured(mlp_run, tmp_path):
    # GIVEN the GELU finding (DS_LIBRARY_OP: F.gelu in the act modules) and the optimizer one
    found = findings_of(mlp_run)
    ids = [found["fusion.hand_gelu"]["id"], found["fusion.optimizer"]["id"]]
    out = tmp_path / "verified"
    # WHEN both are verified (dsprof run --apply ... --baseline RUN, then the comparison)
    res = run_dsprof("verify", str(mlp_run), ",".join(ids), "-o", str(out), timeout=600)
    assert res.code == 0, res.stderr
    # THEN meta.json records the plan: the findings, their predicted saving, the baseline
    m = meta(out)
    assert [f["id"] for f in m["applied"]["findings"]] == ids
    assert m["applied"]["predicted_saving_s"] > 0
    assert m["applied"]["baseline"] == str(mlp_run.resolve())
    # AND the knobs did their work: both act modules run F.gelu, AdamW switched to fused
    assert m["knobs"]["DS_LIBRARY_OP"]["swapped"] == ["FusionMLP.blocks.0.act",
                                                      "FusionMLP.blocks.1.act"]
    assert m["knobs"]["DS_LIBRARY_OP"]["kept"] == {}
    assert m["knobs"]["DS_OPTIMIZER_FUSED"]["switched"] == ["AdamW"]
    # AND the table compares baseline, predicted and measured step time
    assert "step time" in res.stdout and "predicted" in res.stdout and "measured" in res.stdout
    assert ids[0] in res.stdout and "measured " in res.stdout and "ms/step" in res.stdout
    # AND in the rerun's profile the act modules run aten::gelu and none of the hand-written
    # GELU's ops, the fused Adam kernel runs, and neither finding comes back
    with dsprof.load(out) as run:
        in_act = dict(run.sql("""SELECT name, count(*) FROM ops WHERE cat = 'cpu_op'
                                 AND module LIKE 'FusionMLP.blocks.%.act' GROUP BY name"""))
        assert in_act.get("aten::gelu", 0) > 0
        assert not {"aten::tanh", "aten::pow", "aten::mul", "aten::add"} & set(in_act)
        assert run.sql("SELECT count(*) FROM ops WHERE name = 'aten::_fused_adamw_'")[0][0] > 0
    again = findings_of(out)
    assert "fusion.optimizer" not in again and "fusion.hand_gelu" not in again


@pytest.mark.parametrize("script, args, kind, module", [
    ("transformer_lm.py", ("--layers", "1", "--batch-size", "4", "--seq-len", "256"),
     "fusion.attention", "TransformerLM.blocks.0.attn"),
])
def test_named_patterns_in_the_examples(tmp_path, script, args, kind, module):
    # GIVEN an example with hand-written attention (Conv-BN-ReLU: tests/unit, same rule)
    out = tmp_path / "run"
    res = run_dsprof("run", "-q", "--no-analyze", "-o", str(out), *WINDOW, str(EXAMPLES / script),
                     "--steps", "5", *args)
    assert res.code == 0, res.stderr
    # WHEN analyzed
    found = findings_of(out)
    # THEN the pattern is named at its module, with a saving and a compile knob
    assert kind in found, json.dumps(found, indent=1)[:2000]
    f = found[kind]
    assert module in f["data"]["modules"] and f["saving_s"] > 0
    assert module in f["apply"]["DS_COMPILE"].split(",")
