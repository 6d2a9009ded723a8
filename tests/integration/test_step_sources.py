"""``dsprof run`` on loops whose steps it must find by itself: optimizer closures (SGD, Adam,
LBFGS), a hand-written update with no optimizer, gradient accumulation, and torch.compile.
Each script prints what it really did (``FACTS``); dsprof's run directory must agree."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import dsprof as dsprof_api
from tests.integration.helpers import REPO, analyzed_here, dsprof, meta, write
from tests.integration.step_scripts import (
    ACCUMULATION,
    CLOSURE,
    COMPILED,
    COMPILED_STEP,
    FUNC_GRAD,
    MANUAL_UPDATE,
)

pytestmark = pytest.mark.slow

SCHEDULE = ("--wait", "1", "--warmup", "1", "--active", "2")


def _facts(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("FACTS ")]
    assert lines, stdout
    return json.loads(lines[-1][len("FACTS "):])


def _run(tmp_path: Path, name: str, script: str, env: dict[str, str],
         *flags: str) -> tuple[Path, dict]:
    path = write(tmp_path / f"{name}.py", script)
    out = tmp_path / f"run-{name}"
    res = dsprof("run", "--no-analyze", "-o", str(out), *SCHEDULE, *flags, str(path), env=env)
    assert res.code == 0, res.stderr[-3000:]
    return out, _facts(res.stdout)


def _doc(run: Path) -> dict:
    """The run's findings.json, analysed here the first time (runs are made --no-analyze)."""
    path = run / "findings.json"
    return json.loads(path.read_text()) if path.exists() else analyzed_here(run)


def _findings(run: Path, analyzer: str) -> list[dict]:
    doc = _doc(run)
    assert not doc["failed"], doc["failed"]
    return [f for f in doc["findings"] if f["analyzer"] == analyzer]


# SGD with a closure: tests/unit/test_step_sources.py (the span and the returned loss)
@pytest.mark.parametrize("opt", ["adam", "lbfgs"])
def test_closure_forward_and_backward_are_not_the_optimizer(tmp_path, opt):
    # GIVEN a loop that steps with a closure (as Lightning does, and LBFGS must)
    run, facts = _run(tmp_path, f"closure_{opt}", CLOSURE, {"OPT": opt, "STEPS": "8"})
    m = meta(run)
    # THEN one step per optimizer step, whatever the closure calls
    assert m["steps_source"] == "optimizer"
    assert m["steps_recorded"] == facts["optimizer_steps"] == 8
    assert m["closure_steps"] == facts["optimizer_steps"]
    with dsprof_api.load(run) as r:
        closures = r.sql("SELECT count(*) FROM ops WHERE name = '## closure ##' "
                         "AND step IS NOT NULL")[0][0]
        profiled = r.sql("SELECT count(*) FROM steps WHERE profiled")[0][0]
        # LBFGS calls the closure several times per step
        assert closures >= profiled > 0
        # no step's optimizer CPU time stands for the update: forward and backward ran in it
        assert r.sql("SELECT count(*) FROM steps WHERE optimizer_cpu_ns IS NOT NULL")[0][0] == 0
        # the model's matmuls and their gradients are forward/backward, never optimizer
        wrong = r.sql("""SELECT name, phase, count(*) FROM ops
                         WHERE name IN ('aten::addmm', 'aten::mm', 'aten::relu',
                                        'aten::threshold_backward', 'aten::cross_entropy_loss')
                           AND phase NOT IN ('forward', 'backward') GROUP BY ALL""")
        assert wrong == []
        phases = dict(r.sql("SELECT phase, count(*) FROM ops WHERE step IS NOT NULL "
                            "GROUP BY phase"))
        assert phases.get("forward", 0) > 0 and phases.get("backward", 0) > 0
        # the optimizer's own time: its step span less the closures in it
        update_ms = [row[0] / 1e6 for row in r.sql("""
            SELECT o.dur_ns - coalesce((SELECT sum(c.dur_ns) FROM ops c WHERE c.rank = o.rank
                                        AND c.parent_id = o.id
                                        AND c.name = '## closure ##'), 0)
            FROM ops o WHERE o.name LIKE 'Optimizer.step#%'""")]
    fusion = _findings(run, "fusion_optimizer")
    if opt == "lbfgs":  # LBFGS has neither foreach nor fused
        assert fusion == []
    for f in fusion:
        # the finding times the update, not the forward and backward of the closure
        now_ms = f["evidence"][0]["value"] * 1e3
        assert now_ms <= max(update_ms) + 1e-3, (now_ms, update_ms)


def test_manual_update_steps_come_from_backward(tmp_path):
    # GIVEN a loop with no optimizer (word_language_model updates p.data by hand), long
    # enough for dsprof to decide while it runs
    run, facts = _run(tmp_path, "manual", MANUAL_UPDATE, {"STEPS": "70"})
    m = meta(run)
    assert m["steps_source"] == "backward"
    assert m["steps_recorded"] == m["backward_calls"] == facts["backward_calls"] == 70
    # THEN the profiler windows still come, on the schedule counted from the decision
    kinds = [w["kind"] for w in m["windows"]]
    assert "window" in kinds and "unstepped" not in kinds
    with dsprof_api.load(run) as r:
        assert r.sql("SELECT DISTINCT source FROM steps") == [("backward",)]
        assert r.sql("SELECT count(*) FROM steps WHERE profiled")[0][0] == 2
    summary = dsprof("summary", str(run))
    assert "backward" in summary.stdout


def test_a_manual_update_loop_reads_its_loss_once_a_step(tmp_path):
    # GIVEN a hand update (no optimizer) that reads its loss once an iteration, 100 of them:
    # its first 64 backward() ends are kept aside until dsprof decides they are the steps
    script = MANUAL_UPDATE.replace("            p.grad = None\n",
                                   "            p.grad = None\n    if loss.item() < 0:\n"
                                   "        break\n")
    assert "loss.item()" in script
    run, facts = _run(tmp_path, "manual_read", script, {"STEPS": "100"})
    m = meta(run)
    assert m["steps_source"] == "backward"
    assert m["steps_recorded"] == facts["backward_calls"] == 100
    # THEN each read is keyed to the step it ran in, one a step, as the steps were split
    # (the calls made before the decision were all step 0: 63 there, then one a step)
    with dsprof_api.load(run) as r:
        per_step = r.sql("SELECT step, sum(count) FROM host_syncs WHERE call = 'item' "
                         "GROUP BY step ORDER BY step")
    # (the read after backward() k falls in step k + 1, the last after the last boundary)
    assert per_step == [(k, 1) for k in range(1, 101)]
    # AND the finding says so
    titles = [f["title"] for f in _findings(run, "host_syncs")]
    assert any(t.startswith("item() at ") and "manual_read.py:" in t
               and "runs 1.0x per step" in t for t in titles), titles


def test_a_torch_func_training_loop_steps_at_its_gradients_not_its_module_calls(tmp_path):
    # GIVEN a torch.func loop (grad of a functional_call, a hand-written update): no
    # optimizer, no backward(), and two module calls an iteration (the model, the loss)
    run, facts = _run(tmp_path, "func_grad", FUNC_GRAD, {"STEPS": "70"})
    m = meta(run)
    # THEN each gradient ends a step, as backward() would: 70 iterations, 70 steps
    assert (m["steps_source"], m["steps_recorded"]) == ("backward", 70)
    assert m["grad_calls"] == facts["grad_calls"] == 70 and m["backward_calls"] == 0
    with dsprof_api.load(run) as r:
        (profiled,), = r.sql("""SELECT count(DISTINCT step) FROM ops
                                WHERE phase = 'backward' AND step IN
                                  (SELECT step FROM steps WHERE profiled)""")
    assert profiled == 2  # each profiled step has its gradient
    # AND the summary calls it training by torch.autograd.grad, not inference forwards
    out = " ".join(dsprof("summary", str(run)).stdout.split())
    assert "each of the 70 torch.autograd.grad calls" in out
    assert "inference" not in out and "generate()" not in out


def test_a_short_loop_without_optimizer_is_profiled_per_step(tmp_path):
    # GIVEN the same loop, 6 iterations: fewer than the 64 backwards that decide the source
    # while it runs, so its steps are known only at exit
    run, facts = _run(tmp_path, "manual_short", MANUAL_UPDATE, {"STEPS": "6"})
    m = meta(run)
    assert (m["steps_source"], m["steps_recorded"], facts["backward_calls"]) == ("backward", 6, 6)
    # THEN its one whole-run capture is split into its steps (it used to be all step 0)
    assert [(w["kind"], w["steps"]) for w in m["windows"]] == [("unstepped", list(range(6)))]
    with dsprof_api.load(run) as r:
        assert r.sql("SELECT count(*) FROM steps WHERE profiled")[0][0] == 6
        # every step has its own backward, and the same ops as the others from step 1 on
        per_step = dict(r.sql("""SELECT step, count(*) FILTER (WHERE phase = 'backward')
                                 FROM ops WHERE step BETWEEN 0 AND 5 GROUP BY step"""))
        assert sorted(per_step) == list(range(6)) and all(per_step.values())
        assert len({n for s, n in per_step.items() if s > 0}) == 1


@pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)
def test_gradient_accumulation_counts_parameters_once_and_activations_per_forward(tmp_path):
    # GIVEN the same model and micro-batch, with and without 4-way accumulation
    runs = {}
    for accum in (1, 4):
        run, facts = _run(tmp_path, f"accum{accum}", ACCUMULATION,
                          {"ACCUM": str(accum), "STEPS": "6"})
        m = meta(run)
        # THEN steps are optimizer steps, not micro-batches
        assert m["steps_source"] == "optimizer"
        assert m["steps_recorded"] == facts["optimizer_steps"] == 6
        assert m["backward_calls"] == facts["backward_calls"] == 6 * accum
        # the optimizer advice counts each parameter once per step
        fusion = _findings(run, "fusion_optimizer")
        assert fusion, "AdamW(foreach=False) on CPU: expected the fused-optimizer finding"
        assert fusion[0]["data"]["param_bytes"] == facts["param_bytes"]
        with dsprof_api.load(run) as r:
            runs[accum] = dict(r.sql("SELECT name, activation_bytes FROM modules"))
    # and "saved for backward per forward" is one micro-batch's, not the sum of four
    assert runs[4]["MLP"] > 0
    assert runs[4]["MLP"] == runs[1]["MLP"]
    assert runs[4]["MLP.layers"] == runs[1]["MLP.layers"]


def _plain(tmp_path: Path, name: str, script: str) -> dict:
    path = write(tmp_path / f"{name}.py", script)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    plain = subprocess.run([sys.executable, str(path)], env=env, capture_output=True,
                           text=True, timeout=300, check=True)
    return _facts(plain.stdout)


def test_compiled_model_is_the_same_program_under_dsprof(tmp_path):
    # GIVEN a tiny compiled model, run plain and under dsprof
    plain_facts = _plain(tmp_path, "compiled", COMPILED)
    # (a cap under the compile time, 3.7 s and more here, so the check below always runs: the
    # first torch.compile() call imports Dynamo, 1-4 s by the machine's load, and that was
    # counted against the cap, which capped the capture of setup)
    cap = "2"
    run, facts = _run(tmp_path, "compiled_run", COMPILED, {}, "--max-capture", cap)
    # THEN Dynamo saw the same program: graph breaks, graphs, frames and recompiles equal
    for key in ("graph_breaks", "unique_graphs", "frames", "recompiles"):
        assert facts[key] == plain_facts[key], (key, facts, plain_facts)
    assert facts["graph_breaks"] == 0
    # and torch never warned about global module hooks
    assert not [w for w in facts["warnings"] if "global hooks" in w], facts["warnings"]
    m = meta(run)
    assert m["steps_recorded"] == facts["optimizer_steps"] == 12
    # compile time is compile time: recorded, marked on its steps, never a capped window
    assert m["compile"]["used"] and m["compile"]["total_s"] > 0
    if m["compile"]["total_s"] > float(cap):
        assert not m["capped"]
        assert [w["kind"] for w in m["windows"]] == ["window"]
    with dsprof_api.load(run) as r:
        compiled_steps = [s for (s,) in r.sql("SELECT step FROM steps WHERE compile_ns > 0")]
        durations = [d for (d,) in r.sql("SELECT dur_ns FROM steps WHERE compile_ns = 0")]
    assert compiled_steps and 0 in compiled_steps
    assert statistics.median(durations) > 0
    for f in _findings(run, "step_outliers"):
        assert not set(f["data"]["steps"]) & set(compiled_steps)



def test_compiled_train_step_keeps_its_graph_breaks_and_steps(tmp_path):
    # GIVEN a whole train step under torch.compile: it breaks at backward() and .item(), and
    # the eager code between graphs calls dsprof's backward, .item() and optimizer hooks
    plain_facts = _plain(tmp_path, "compiled_step", COMPILED_STEP)
    run, facts = _run(tmp_path, "compiled_step_run", COMPILED_STEP, {})
    # THEN the same graph breaks, graphs and recompiles as plain
    for key in ("graph_breaks", "unique_graphs", "recompiles"):
        assert facts[key] == plain_facts[key], (key, facts, plain_facts)
    # and the steps: the compiled opt.step() runs no hook, so backward() marks them
    m = meta(run)
    assert m["steps_source"] == "backward"
    assert m["steps_recorded"] == facts["optimizer_steps"] == 10
    # AND the step time leaves out the steps that compiled, also when (found after the fact,
    # the whole run one capture) no step ran at full speed
    with dsprof_api.load(run) as r:
        compiled = {s for (s,) in r.sql("SELECT step FROM steps WHERE compile_ns > 0")}
        counted = {s for _, s, _ in r.facts.step.counted}
    assert compiled and counted and not counted & compiled, (compiled, counted)
    # AND the fused-optimizer analyzer says why it has no optimizer span: the step compiled
    doc = _doc(run)
    reasons = {s["analyzer"]: s["reason"] for s in doc["skipped"]}
    assert "torch.compile was in use" in reasons.get("fusion_optimizer", ""), reasons
