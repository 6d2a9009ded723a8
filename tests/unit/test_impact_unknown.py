"""An op-time estimate from a CPU run whose training thread was mostly off the CPU in the
profiled steps (a loaded machine) leaves the ranked list: "impact unknown; verify to measure"."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.metrics.noise import profiled_on_cpu_share
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import BIG, MS, SCRIPT, steps, table


def gelu_like_run(cpu_ms: list[float], data_wait_ms: list[float] | None = None,
                  module: str | None = "M.act") -> Run:
    """The synthetic fusion case (mul, add, tanh on 2048 x 2048, 2 ms each, in step 1 of two
    20 ms profiled steps), the whole forward of module M.act (a library-op fix, not a compile),
    with the thread's CPU time per step given."""
    chain = ["aten::mul", "aten::add", "aten::tanh"]
    ops = [{"id": i + 1, "step": 1, "name": n, "cat": "cpu_op", "thread": 1,
            "start_ns": (10 + 2 * i) * MS, "dur_ns": 2 * MS, "phase": "forward",
            "input_shapes": BIG, "dtypes": '["float", "float"]', "module": module, "seq": 50 + i}
           for i, n in enumerate(chain)]
    # the chain's autograd nodes in the backward (a training step: a swap without autograd is
    # not priced on CPU), linked to its ops by sequence number
    ops += [{"id": 20 + i, "step": 1, "cat": "cpu_op", "thread": 1, "phase": "backward",
             "name": f"autograd::engine::evaluate_function: {n[6:].title()}Backward0",
             "start_ns": 18 * MS + i * MS // 4, "dur_ns": MS // 5, "module": module,
             "seq": 52 - i} for i, n in enumerate(reversed(chain))]
    # elsewhere in the model a library GELU on the same shapes, cheap: the run's own measure of
    # what the library op costs on CPU (analyzers/fusion.py takes it off the saving)
    ops += [{"id": 10 + i, "step": 1, "name": n, "cat": "cpu_op", "thread": 1,
             "start_ns": (17 + i) * MS, "dur_ns": MS // 10, "phase": ph,
             "input_shapes": "[[2048, 2048]]", "dtypes": '["float"]', "module": "M.other"}
            for i, (n, ph) in enumerate([("aten::gelu", "forward"),
                                         ("aten::gelu_backward", "backward")])]
    # a matmul between them, as a model has: the library GELU is no part of the chain (it
    # followed the tanh on the same shape, and the chain read mul -> add -> tanh -> gelu)
    ops += [{"id": 30, "step": 1, "name": "aten::mm", "cat": "cpu_op", "thread": 1,
             "start_ns": 16 * MS + MS // 2, "dur_ns": MS // 5, "phase": "forward",
             "input_shapes": "[[2048, 2048], [2048, 2048]]", "dtypes": '["float", "float"]',
             "module": "M.other"}]
    st = steps([20, 20], cpu_ns=[int(c * MS) for c in cpu_ms],
               data_wait_ns=[int(w * MS) for w in (data_wait_ms or [0, 0])], rank=[0, 0])
    return Run.from_tables(meta={**SCRIPT, "host_bandwidth": {"bytes_per_s": 1e10}},
                           steps=st, ops=table(*ops))


def fusion_finding(run: Run):
    (f,) = [f for f in analyze(run, write=False).findings if f.analyzer == "fusion"]
    return f


def test_on_an_idle_machine_the_estimate_is_ranked():
    run = gelu_like_run([19, 19])
    assert profiled_on_cpu_share(run) == pytest.approx(0.95)
    f = fusion_finding(run)
    assert f.severity != "info" and "impact_unknown" not in f.data


def test_a_thread_off_the_cpu_most_of_the_step_makes_the_impact_unknown():
    # GIVEN the same steps, the thread on a CPU 5 of their 20 ms (other processes held it)
    f = fusion_finding(gelu_like_run([5, 5]))
    # THEN the saving is kept, out of the ranked list, saying why and what to do
    assert f.saving_s > 0 and f.severity == "info"
    assert f.data["impact_unknown"] == pytest.approx(0.25)
    assert "Impact unknown; verify to measure" in f.explanation and "25%" in f.explanation


def test_waiting_for_data_is_not_taken_for_a_loaded_machine():
    # GIVEN steps that wait 14 ms for the DataLoader and compute 5.5 ms of the other 6 on a CPU
    f = fusion_finding(gelu_like_run([5.5, 5.5], [14, 14]))
    # THEN the estimate stays ranked
    assert f.severity != "info" and "impact_unknown" not in f.data



def test_a_compile_fix_on_cpu_is_not_ranked():
    # GIVEN the same chain outside any module (no library-op swap: the fix compiles), on an
    # idle machine
    f = fusion_finding(gelu_like_run([19, 19], module=None))
    # THEN its saving is kept, unranked: compiling single modules measured slower on CPU
    assert f.saving_s > 0 and f.severity == "info"
    assert f.data["impact_unknown"] == "compile on CPU"
    assert "Impact unknown; verify to measure" in f.explanation
