"""``dsprof run`` on scripts that only infer: each outermost module call is a step, the profiler
window comes on the usual schedule, and the summary says what a step is. Training runs with
evaluation forwards around them keep exactly the steps they had (the optimizer's), and a
compiled model infers through the same graphs as without dsprof."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import dsprof as dsprof_api
from tests.integration.helpers import REPO, dsprof, meta, runs_as_without_dsprof, write
from tests.integration.inference_scripts import (
    COMPILED_INFERENCE,
    GENERATE,
    INFER_THEN_TRAIN,
    INFERENCE,
    LIGHTNING_EVAL,
    SLOW_INFERENCE,
    TRAIN_WITH_EVAL,
)

pytestmark = pytest.mark.slow


def _facts(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("FACTS ")]
    assert lines, stdout
    return json.loads(lines[-1][len("FACTS "):])


def _run(tmp_path: Path, name: str, script: str, env: dict[str, str], *flags: str,
         code: int = 0) -> tuple[Path, dict]:
    path = write(tmp_path / f"{name}.py", script)
    out = tmp_path / f"run-{name}"
    # (not analysed at its end: what is judged is the steps, read here, and the summary)
    res = dsprof("run", "--no-analyze", "-o", str(out), *flags, str(path), env=env)
    assert res.code == code, res.stderr[-3000:]
    return out, _facts(res.stdout)


def _plain(tmp_path: Path, name: str, script: str, env: dict[str, str],
           code: int = 0) -> dict:
    path = write(tmp_path / f"{name}-plain.py", script)
    full = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env}
    res = subprocess.run([sys.executable, str(path)], env=full, capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == code, res.stderr[-3000:]
    return _facts(res.stdout)


def _sources(run: Path) -> list[str]:
    with dsprof_api.load(run) as r:
        return [s for (s,) in r.sql("SELECT source FROM steps ORDER BY step")]


@pytest.mark.parametrize("mode", ["inference", "no_grad"])
def test_an_inference_loop_steps_on_its_forwards_and_gets_a_window(tmp_path, mode):
    # GIVEN 40 forwards of an eval-mode model under inference_mode / no_grad, at the default
    # schedule (wait 5, warm-up 1, active 3)
    run, facts = _run(tmp_path, f"infer_{mode}", INFERENCE, {"MODE": mode, "N": "40"})
    m = meta(run)
    # THEN each forward is a step, marked as such
    assert (m["steps_source"], m["steps_recorded"], m["forward_calls"]) == (
        "forward", facts["forwards"], 40)
    assert m["forward_modules"] == {"MLP": 40}
    assert _sources(run) == ["forward"] * 40
    # and the window opens on the schedule counted from the 16th forward (the decision):
    # a real window of 3 steps, not the whole-run capture
    assert [(w["kind"], w["steps"]) for w in m["windows"]] == [("window", [22, 23, 24])]
    with dsprof_api.load(run) as r:
        assert r.sql("SELECT list(step ORDER BY step) FROM steps WHERE profiled")[0][0] == [
            22, 23, 24]
        # each profiled step holds exactly one forward: the model's 4 Linear layers
        per_step = dict(r.sql("""SELECT step, count(*) FROM ops WHERE name = 'aten::addmm'
                                 GROUP BY step"""))
        assert per_step == {22: 4, 23: 4, 24: 4}
        # the steps are timed: a median, from full-speed steps
        assert r.facts.step.median_s and r.facts.step.median_s > 0
    # and summary names the source
    out = dsprof("summary", str(run)).stdout
    assert "step boundaries   forward" in out
    assert "steps: 40 inference forwards of MLP" in " ".join(out.split())


def test_a_short_inference_loop_is_profiled_per_forward(tmp_path):
    # GIVEN 6 forwards: fewer than the 16 that decide while the script runs, so the steps are
    # known only at exit
    run, _ = _run(tmp_path, "infer_short", INFERENCE, {"N": "6"})
    m = meta(run)
    assert (m["steps_source"], m["steps_recorded"]) == ("forward", 6)
    # THEN the whole-run capture is cut into one span per forward, as for backward() steps
    assert [(w["kind"], w["steps"]) for w in m["windows"]] == [("unstepped", list(range(6)))]
    trace = (run / "raw" / "rank0" / m["windows"][0]["file"]).read_text()
    assert "dsprof.forward_step#" not in trace
    with dsprof_api.load(run) as r:
        per_step = dict(r.sql("""SELECT step, count(*) FROM ops WHERE name = 'aten::addmm'
                                 GROUP BY step"""))
    assert per_step == {s: 4 for s in range(6)}


def test_a_capped_capture_of_an_inference_loop_keeps_the_forwards_it_holds(tmp_path):
    # GIVEN 12 forwards of 0.2 s, and a 1 s cap on the capture that runs until the forwards
    # are known to be the steps (at exit: fewer than 16)
    run, _ = _run(tmp_path, "infer_capped", SLOW_INFERENCE, {"N": "12", "SLEEP": "0.2"},
                      "--max-capture", "1")
    m = meta(run)
    assert (m["steps_source"], m["steps_recorded"], m["capped"]) == ("forward", 12, True)
    # THEN the saved capture lists the steps it holds whole, each with its one forward
    (w,) = m["windows"]
    assert w["kind"] == "unstepped" and w["capped"]
    assert 1 <= len(w["steps"]) < 12 and w["steps"] == list(range(len(w["steps"])))
    assert "dsprof.forward_step#" not in (run / "raw" / "rank0" / w["file"]).read_text()
    with dsprof_api.load(run) as r:
        per_step = dict(r.sql("""SELECT step, count(*) FROM ops WHERE name = 'aten::addmm'
                                 GROUP BY step"""))
    assert per_step == {s: 1 for s in w["steps"]}


@pytest.mark.parametrize("grad_eval", ["0", "1"])
def test_training_with_evaluation_forwards_keeps_its_optimizer_steps(tmp_path, grad_eval):
    # GIVEN SGD training, 5 evaluation forwards before it and 4 after every third step (under
    # no_grad, or with grad enabled as a sloppy script does)
    env = {"GRAD_EVAL": grad_eval, "STEPS": "12"}
    run, facts = _run(tmp_path, f"train_eval{grad_eval}", TRAIN_WITH_EVAL, env,
                      "--wait", "1", "--warmup", "1", "--active", "2")
    m = meta(run)
    # THEN the steps are the optimizer's, exactly as before this change (main at a3b58dc, the
    # same script and schedule: optimizer, 12 steps, one window of steps 3 and 4)
    assert (m["steps_source"], m["steps_recorded"]) == ("optimizer", facts["optimizer_steps"])
    assert _sources(run) == ["optimizer"] * 12
    assert [(w["kind"], w["steps"]) for w in m["windows"]] == [("window", [3, 4])]
    # and the forward watch stopped at the first backward(): the 5 evaluation forwards and
    # the first training forward are all it saw
    assert m["forward_calls"] == 6 and facts["eval_forwards"] == 5 + 4 * 4


def test_a_training_script_that_infers_first_keeps_its_optimizer_steps(tmp_path):
    # GIVEN 40 inference forwards (past the 16 that decide) before 10 training steps, with the
    # optimizer built first, as a training script does (PPO's rollouts)
    script = write(tmp_path / "opt_infer_train.py", INFER_THEN_TRAIN)
    run = tmp_path / "run-opt_infer_train"
    res = dsprof("run", "-o", str(run), str(script),
                 env={"INFER": "40", "STEPS": "10", "OPT_FIRST": "1"})
    assert res.code == 0, res.stderr[-3000:]
    m = meta(run)
    # THEN the steps are the optimizer's alone, as before this change, and the watch left at
    # the 16th forward
    assert (m["steps_source"], m["steps_recorded"]) == ("optimizer", 10)
    assert _sources(run) == ["optimizer"] * 10
    assert m["forward_calls"] == 16
    # AND the script's terminal is not told to mark steps (CleanRL's PPO was: "call
    # dsprof.step() each iteration"); the decision is in dsprof.log
    assert "forward calls" not in res.stderr and "dsprof.step()" not in res.stderr
    assert "the steps will be its steps, not these forward calls" in " ".join(
        (run / "dsprof.log").read_text().split())


def test_inference_then_training_keeps_forward_steps_until_the_optimizer_takes_over(tmp_path):
    # GIVEN 20 inference forwards (past the 16 that decide), then an optimizer is built and
    # trains 10 steps
    run, _ = _run(tmp_path, "infer_train", INFER_THEN_TRAIN, {"INFER": "20", "STEPS": "10"})
    m = meta(run)
    # THEN the forwards are steps, the first training forward ends the last of them, and
    # the optimizer marks every step after it
    assert m["steps_source"] == "optimizer"
    assert _sources(run) == ["forward"] * 21 + ["optimizer"] * 10
    # AND that training forward is the training loop's, not an inference forward: its step
    # starts the loop (it ran in grad mode after 20 under inference_mode)
    assert m["forward_calls"] == 20 and _training_step(run) == 20
    out = " ".join(dsprof("summary", str(run)).stdout.split())
    assert "steps: 20 inference forwards of MLP" in out and "then the run trained" in out


def _training_step(run: Path) -> int | None:
    """The first step of the loop after the forward steps (the step collector's record)."""
    (first,) = json.loads((run / "raw" / "rank0" / "session.json").read_bytes())["loop_starts"]
    return first


def _loops(run: Path) -> tuple[list[tuple[int, str, str | None, bool]], list[int]]:
    """(step, source, disturbed_by, profiled) of every step, and the steps run.facts counts."""
    with dsprof_api.load(run) as r:
        rows = [(int(a), b, c, bool(d)) for a, b, c, d in r.sql(
            "SELECT step, source, disturbed_by, profiled FROM steps ORDER BY step")]
        counted = [int(s) for _, s, _ in r.facts.step.counted]
    return rows, counted


def test_features_extracted_then_a_head_trained_profile_the_training(tmp_path):
    # GIVEN 100 inference forwards (a frozen encoder's feature extraction), then an optimizer
    # built and 40 training steps: the forwards are the steps until it steps, and the
    # schedule's window (steps 22-24) falls in them
    run, _ = _run(tmp_path, "extract_train", INFER_THEN_TRAIN, {"INFER": "100", "STEPS": "40"})
    m = meta(run)
    rows, counted = _loops(run)
    first = next(s for s, src, _, _ in rows if src == "optimizer")
    # the training loop starts at the step its first forward ended (100), the step before
    # the optimizer's first (101)
    start = _training_step(run)
    assert (first, start) == (101, 100)
    assert m["forward_calls"] == 100 and m["forward_modules"] == {"MLP": 100}
    # THEN the training gets a window of its own, and the forward loop's is set aside with
    # its files, out of the tables
    kinds = [(w["kind"], w["steps"]) for w in m["windows"]]
    assert kinds[0] == ("earlier_loop", [22, 23, 24]), kinds
    assert kinds[1][0] == "window" and min(kinds[1][1]) > start + 2, kinds
    aside = run / "raw" / "rank0" / "earlier_loops"
    assert (aside / "window-0.trace.json").is_file()
    assert not (run / "raw" / "rank0" / "window-0.trace.json").exists()
    assert [s for s, _, _, p in rows if p] == kinds[1][1]
    with dsprof_api.load(run) as r:
        (in_forward_loop,), = r.sql("SELECT count(*) FROM ops WHERE step < ?", [start])
    assert in_forward_loop == 0
    # and the step times are the training's: its first two steps (the code between the loops,
    # then the first calls) and every forward step are left out
    assert {d for s, _, d, _ in rows if 1 <= s < start} == {"earlier_loop"}
    assert [d for s, _, d, _ in rows if s in (start, start + 1)] == ["loop_start"] * 2
    assert counted and min(counted) >= start + 2
    assert all(src == "optimizer" for s, src, _, _ in rows if s in counted)
    text = dsprof("summary", str(run)).stdout
    out = " ".join(text.split())
    assert "steps: 100 inference forwards of MLP" in out
    assert "optimizer marked the steps from step 101" in out
    assert "step times and op-level findings are of the last loop, steps 100-140" in out
    # (the path may be wrapped)
    assert f"dsprofimport-oNEW_RUN{aside}analysesthem" in "".join(text.split())
    # and the forward loop's window imports on its own, as the summary says
    res = dsprof("import", "-o", str(tmp_path / "forward-loop"), str(aside))
    assert res.code == 0, res.stderr
    with dsprof_api.load(tmp_path / "forward-loop") as r:
        assert [int(s) for (s,) in r.sql("SELECT step FROM steps ORDER BY 1")] == [22, 23, 24]


def test_a_training_too_short_for_a_window_leaves_the_forward_loop_the_runs_evidence(tmp_path):
    # GIVEN 40 inference forwards, then 5 training steps: fewer than the schedule needs
    run, _ = _run(tmp_path, "extract_short", INFER_THEN_TRAIN, {"INFER": "40", "STEPS": "5"})
    m = meta(run)
    rows, counted = _loops(run)
    first = _training_step(run)
    assert first == 40  # the step the first training forward ended
    # THEN the forward loop keeps its window, and its steps are the ones timed: the training
    # steps (from the one that holds the code between the loops and the first training
    # forward) are left out
    assert [(w["kind"], w["steps"]) for w in m["windows"]] == [("window", [22, 23, 24])]
    assert {d for s, _, d, _ in rows if s >= first} == {"later_loop"}
    assert counted and max(counted) == first - 1
    out = " ".join(dsprof("summary", str(run)).stdout.split())
    assert "the 6 steps from step 40 on got no profiler window of their own (the schedule " \
        "needs 10" in out and "findings are of steps 0-39" in out


def test_backward_steps_after_forward_steps_are_steady_not_a_capture(tmp_path):
    # GIVEN 30 inference forwards, then a loop with no optimizer (parameters updated by hand)
    # whose backward() ends become the steps at the 64th of them
    script = INFER_THEN_TRAIN.replace("    opt.step()\n", """    with torch.no_grad():
        for p in model.parameters():
            p -= 0.01 * p.grad
""")
    run, _ = _run(tmp_path, "extract_manual", script, {"INFER": "30", "STEPS": "80"})
    m = meta(run)
    rows, counted = _loops(run)
    assert m["steps_source"] == "backward" and _training_step(run) == 30
    # THEN the steps backward() marked after the fact are steady steps (no whole-run capture
    # ran then: it ended when the forwards became the steps), and a training window came
    assert not any(d == "capture" for s, _, d, _ in rows if s >= 31)
    assert len([s for s in counted if s >= 31]) >= 60
    assert any(w["kind"] == "window" and min(w["steps"]) > 31 for w in m["windows"])


# Lightning: trainer.validate() before trainer.fit(), the optimizer built by fit
VALIDATE_THEN_FIT = """
import torch
import lightning as L
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))

    def training_step(self, batch, i):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


data = DataLoader(TensorDataset(torch.randn(960, 32), torch.randint(0, 4, (960,))),
                  batch_size=32)
trainer = L.Trainer(max_epochs=1, num_sanity_val_steps=0, check_val_every_n_epoch=2,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
model = Classifier()
trainer.validate(model, data, verbose=False)
trainer.fit(model, data)
print("global_step", trainer.global_step)
"""


def test_lightning_validate_then_fit_profiles_the_fit(tmp_path):
    # GIVEN trainer.validate() over 30 batches (past the 16 forwards that decide), then fit()
    script = write(tmp_path / "validate_fit.py", VALIDATE_THEN_FIT)
    out = tmp_path / "run"
    # WHEN profiled THEN it runs as without dsprof
    res = runs_as_without_dsprof(script, out)
    assert "global_step 30" in res.stdout
    m = meta(out)
    rows, counted = _loops(out)
    # (the 30 validation forwards were steps 0-29; the fit's first forward, which no
    # backward() followed yet, ended step 30, the fit's first: it ran in grad mode)
    assert _training_step(out) == 30 and m["forward_calls"] == 30
    # AND the profile and the step times are the fit's: its window holds backward and
    # optimizer ops, the validation's window is set aside
    assert [w["kind"] for w in m["windows"]] == ["earlier_loop", "window"]
    with dsprof_api.load(out) as r:
        phases = {p for (p,) in r.sql("SELECT DISTINCT phase FROM ops WHERE phase IS NOT NULL")}
    assert {"forward", "backward", "optimizer"} <= phases, phases
    assert counted and all(src == "optimizer" for s, src, _, _ in rows if s in counted)


def test_a_compiled_inference_loop_is_the_same_program_under_dsprof(tmp_path):
    # GIVEN a compiled model's inference loop, run plain and under dsprof
    plain = _plain(tmp_path, "compiled_infer", COMPILED_INFERENCE, {})
    run, facts = _run(tmp_path, "compiled_infer", COMPILED_INFERENCE, {})
    # THEN Dynamo saw the same program: graph breaks, graphs, frames and recompiles equal
    for key in ("graph_breaks", "unique_graphs", "frames", "recompiles"):
        assert facts[key] == plain[key], (key, facts, plain)
    assert facts["graph_breaks"] == 0 and facts["recompiles"] == 0
    assert not [w for w in facts["warnings"] if "global hooks" in w], facts["warnings"]
    # and the module hooks left with torch.compile(): no forward steps (documented)
    m = meta(run)
    assert m["compile"]["used"] and m["steps_source"] == "none"


def test_an_inference_script_keeps_its_output_and_exit_status(tmp_path):
    # GIVEN an inference script that exits with status 3 before its 30th forward, inside
    # dsprof's window (steps 22-24 are recorded, 25 writes the trace)
    env = {"N": "40", "EXIT_AT": "30"}
    plain = _plain(tmp_path, "infer_exit", INFERENCE, env, code=3)
    run, facts = _run(tmp_path, "infer_exit", INFERENCE, env, code=3)
    # THEN what it printed and its status are its own
    assert facts == plain
    m = meta(run)
    assert (m["exit_status"], m["steps_source"], m["steps_recorded"]) == (3, "forward", 30)


def test_generate_steps_are_token_forwards(tmp_path):
    pytest.importorskip("transformers")
    # GIVEN 4 greedy generate() calls of 10 new tokens each on a tiny random GPT-2
    run, _ = _run(tmp_path, "generate", GENERATE, {"CALLS": "4", "TOKENS": "10"})
    m = meta(run)
    # THEN a step is one token's forward of the model (40), not a generate() call (4)
    assert (m["steps_source"], m["steps_recorded"]) == ("forward", 40)
    assert m["forward_modules"] == {"GPT2LMHeadModel": 40}
    assert [w["kind"] for w in m["windows"]] == ["window"]
    out = " ".join(dsprof("summary", str(run)).stdout.split())
    assert "steps: 40 inference forwards of GPT2LMHeadModel" in out
    doc = json.loads((run / "findings.json").read_text())
    assert not doc["failed"], doc["failed"]


def test_lightning_predict_and_validate_step_per_batch(tmp_path):
    pytest.importorskip("lightning")
    # GIVEN trainer.predict then trainer.validate, 20 batches each
    run, facts = _run(tmp_path, "lightning_eval", LIGHTNING_EVAL, {"BATCHES": "20"})
    m = meta(run)
    # THEN each batch's forward of the LightningModule is a step, of both loops
    n = facts["predict_batches"] + facts["validate_batches"]
    assert (m["steps_source"], m["steps_recorded"], n) == ("forward", 40, 40)
    assert m["forward_modules"] == {"Net": 40}
    assert [w["kind"] for w in m["windows"]] == ["window"]
