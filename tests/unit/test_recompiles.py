"""Code torch.compile compiles again and again (analyzers/recompiles.py), from a ``compiles``
table: the guard texts are Dynamo's own, as torch 2.13 wrote them on this machine."""

from __future__ import annotations

import pytest

from dsprof.analyzers.recompiles import guard_of
from dsprof.analyzers.registry import analyze
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import MS, steps, table

RUN = {"source": "run", "target": {"kind": "script", "name": "train.py", "argv": ["train.py"]}}
# Dynamo's recompile_reason for each kind, word for word (the source comment included)
GLOBAL = ("0/{n}: G['STEP'] == {n}                                                # return "
          "((model(x) - y) ** 2).mean() * (1.0 + STEP % 13)  # mp/rc_global.py:9 in scaled_loss")
REASONS = {
    "global": "0/7: G['STEP'] == 7                                                # return x",
    "size": "0/0: tensor 'args[0]' size mismatch at index 0. expected 8, actual 16",
    "length": "0/3: len(xs) == 4                                             # def f_list(xs)",
    "value": "0/2: mode == 'm2'                                             # def f_str(x, mode)",
    "type": "2/0: tensor 't' dtype mismatch. expected Float, actual Double",
    "mode": "0/0: fn._modules['1'].training == True                        # return F.dropout(",
}
LIMIT = "Dynamo recompile limit exceeded"


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_each_guard_is_read_for_what_it_checked(kind):
    assert guard_of(REASONS[kind]).kind == kind


def test_a_guard_keeps_its_name_and_loses_dynamos_prefix_and_comment():
    guard = guard_of(REASONS["global"])
    assert (guard.name, guard.text) == ("STEP", "G['STEP'] == 7")
    assert guard_of(REASONS["value"]).name == "mode"
    assert guard_of(REASONS["size"]).name == "0"  # the dimension
    assert guard_of("0/2: GLOBAL_STATE changed: grad_mode ").kind == "mode"
    assert guard_of("0/1: s == 0.0   # def f(x, s)").kind == "value"


def _run(compiles: list[dict], n_steps: int = 40, meta_compile: dict | None = None) -> Run:
    durs = [300.0] + [0.5] * (n_steps - 1)
    meta = {**RUN, "compile": {"used": True, "recompile_limit": 8, **(meta_compile or {})}}
    return Run.from_tables(meta=meta, steps={**steps(durs), "profiled": [False] * n_steps},
                           compiles=table(*compiles, rank=0))


def _recompiling(n: int, code: str = "scaled_loss", site: str = "train.py:7",
                 gave_up: bool = False, reason: str = GLOBAL) -> list[dict]:
    rows = [{"compile_id": "0/0", "frame": 0, "attempt": 0, "code": code, "site": site,
             "step": 0, "start_ns": 0, "dur_ns": int(130 * MS), "backward": False}]
    rows += [{"compile_id": f"0/{i}", "frame": 0, "attempt": i, "code": code, "site": site,
              "step": i, "start_ns": int(i * 300 * MS), "dur_ns": int(48 * MS),
              "backward": False, "recompile_reason": reason.format(n=i - 1)}
             for i in range(1, n + 1)]
    if gave_up:
        rows.append({"compile_id": f"0/{n + 1}", "frame": 0, "attempt": n + 1, "step": n + 1,
                     "start_ns": int((n + 1) * 300 * MS), "dur_ns": int(2 * MS),
                     "recompile_reason": reason.format(n=n), "fail_type": "Unsupported",
                     "fail_reason": LIMIT})
    return rows


def _findings(run: Run) -> list:
    out = analyze(run, only=("recompiles",), write=False)
    assert not out.failed, out.failed
    return [f for f in out.findings if f.kind == "compile.recompiles"]


def test_code_dynamo_gave_up_on_is_a_finding_with_the_guard_and_its_fix():
    # GIVEN a compiled loss reading a global step counter: 7 recompiles, then the limit
    (f,) = _findings(_run(_recompiling(7, gave_up=True)))
    # THEN the title names the code, the count, the cause and the give-up step
    assert "scaled_loss (train.py:7)" in f.title and "7 times" in f.title
    assert "a Python global it reads changed" in f.title
    assert "runs uncompiled since step 8" in f.title
    assert f.confidence == "high"
    # AND the saving is the recompiles' share of the run's time, as that share of a step: never
    # more than a step (their time over the steps read "saves 12.2 ms/step (100%)")
    assert "of the time of the run's 40 steps" in f.explanation
    assert 0 < f.saving_s < 0.0005 * 1.01
    assert "recompile_limit = 8" in f.explanation and "G['STEP'] == 0" in f.explanation
    # AND the fix passes the global in as a tensor, by its name
    assert "STEP_t = torch.tensor(float(STEP))" in f.fix
    assert "scaled_loss(..., STEP_t)" in f.fix
    assert any("step 1: G['STEP'] == 0 (48.0 ms)" in e.text for e in f.evidence)
    assert any(LIMIT in e.text for e in f.evidence)


def test_a_few_recompiles_are_paid_once_and_no_finding():
    # GIVEN a shape that changed once and then a second time (automatic dynamic shapes)
    run = _run(_recompiling(2, reason=REASONS["size"]))
    out = analyze(run, only=("recompiles",), write=False)
    assert [f for f in out.findings if f.kind == "compile.recompiles"] == []
    # THEN the skip says what it saw
    (why,) = [s["reason"] for s in out.skipped if s["analyzer"] == "recompiles"]
    assert "recompiled 2 time(s)" in why and "paid once" in why


def test_training_and_evaluation_switches_are_not_counted():
    # GIVEN a compiled model switched between train() and eval() and no_grad: 4 recompiles,
    # each for a mode (one graph a mode, cached after)
    rows = _recompiling(4, reason=REASONS["mode"])
    assert _findings(_run(rows)) == []
    # AND with three other recompiles among them, those count, and the switches are said
    rows += [{"compile_id": f"0/{i}", "frame": 0, "attempt": i, "code": "scaled_loss",
              "site": "train.py:7", "step": i, "start_ns": int(i * 300 * MS),
              "dur_ns": int(40 * MS), "recompile_reason": REASONS["length"]}
             for i in (5, 6, 7)]
    for row, step in zip(rows[-3:], (25, 30, 35)):  # still recompiling late in the run
        row["step"] = step
    (f,) = _findings(_run(rows))
    assert "3 times" in f.title and "a list's length changed" in f.title
    assert f.confidence == "medium"  # no give-up: a longer run spreads the time thinner
    assert "4 recompilation(s) for a mode switch" in f.explanation
    assert "torch.stack(xs)" in f.fix


def test_recompiles_that_stopped_early_are_a_one_time_cost():
    # GIVEN a list whose 6 lengths recompiled steps 1-5 of 40, and none after (all cached)
    run = _run(_recompiling(5, reason=REASONS["length"]))
    out = analyze(run, only=("recompiles",), write=False)
    assert [f for f in out.findings if f.kind == "compile.recompiles"] == []
    (why,) = [s["reason"] for s in out.skipped if s["analyzer"] == "recompiles"]
    assert "the last in step 5 of 40" in why and "one-time cost" in why
    # AND the same still recompiling in the run's second half is a finding
    rows = _recompiling(5, reason=REASONS["length"])
    rows[-1]["step"] = 30
    (f,) = _findings(_run(rows))
    assert "5 times" in f.title


def test_a_compiled_modules_code_is_named_by_the_scripts_torch_compile_call():
    # GIVEN a compiled module, whose code Dynamo names as torch's own wrapper
    rows = _recompiling(7, code="inner", site="torch/_dynamo/external_utils.py:67",
                        reason=REASONS["type"], gave_up=True)
    (f,) = _findings(_run(rows, meta_compile={"calls": [["train.py:21", "Sequential"]]}))
    # THEN it is the script's call and the module's class
    assert "the compiled Sequential (train.py:21)" in f.title
    assert "external_utils" not in f.title


def test_hostile_text_in_the_table_stays_one_line_in_the_fix():
    # GIVEN a run directory whose reason and code names hold line breaks and code
    reason = "0/{n}: G['X\\nimport os'] == 1"
    rows = _recompiling(3, code="f\nos.system('x')", gave_up=True, reason=reason)
    (f,) = _findings(_run(rows))
    # THEN no line of the fix starts with what the run directory wrote
    assert not any(line.startswith(("os.", "import")) for line in f.fix.splitlines())
    assert "\n" not in f.title
