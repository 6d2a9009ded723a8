"""Findings on a trace that marks no steps say what they measured (issue 19): the figures are
totals over the capture ("in the trace"), never "per step", and an import has no command for
``dsprof verify`` to rerun. The shared traces without ProfilerStep spans, and a synthetic run."""

from __future__ import annotations

import re

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import Run
from tests.unit.shared_traces import NAMES, analysis
from tests.unit.test_analyzers_synthetic import MS, table

# the phrases of a figure per training step
STEP_WORDS = re.compile(r"\b(?:per|a|each|of the|in the) step\b|/step\b|\bstep's\b",
                        re.IGNORECASE)

STEPLESS = [n for n in NAMES if analysis(n)[1] is None]


def _texts(f) -> list[str]:
    return [f.title, f.explanation, *(e.text for e in f.evidence)]


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
def test_the_shared_traces_without_steps_are_the_expected_ones():
    # the 2021 autograd-API trace, HTA's benchmark, annotation, inference and counter traces
    assert "kineto_resnet50_v100_autograd/worker0.pt.trace.json.gz" in STEPLESS
    assert any(n.startswith("hta_a100_alexnet_small/") for n in STEPLESS)
    assert "hta_v100_1rank/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz" not in STEPLESS


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
@pytest.mark.parametrize("name", STEPLESS)
def test_no_finding_on_a_trace_without_steps_speaks_of_a_step(name):
    found = analysis(name)[0].findings
    for f in found:
        said = [t for t in _texts(f) if STEP_WORDS.search(t)]
        assert not said, (f.kind, said)
        # an imported trace has no command to rerun: verify says how to compare instead
        assert not f.verify.startswith("dsprof verify"), (f.kind, f.verify)
        if f.saving_s > 0:
            assert f.data.get("saving_per") in ("capture", "iteration"), (f.kind, f.data)


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
def test_precision_on_a_trace_without_steps_gives_its_totals_in_the_trace():
    name = "hta_a100_alexnet_small/benchmark_result_2869224_1695835535_trace.json.gz"
    (f,) = [f for f in analysis(name)[0].findings if f.kind == "precision.fp32_matmul"]
    assert re.search(r"[\d.]+ ms in the trace \(\d+% of kernel time\)", f.explanation)
    assert all(e.text.endswith(" ms in the trace") for e in f.evidence)


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
def test_the_dataloader_wait_of_a_trace_without_steps_measures_the_idle_time_in_its_fetches():
    # GIVEN the autograd-API ResNet-50 trace: six single-process batch fetches, no steps
    name = "kineto_resnet50_v100_autograd/worker0.pt.trace.json.gz"
    (f,) = [f for f in analysis(name)[0].findings if f.kind == "input.dataloader_wait"]
    # THEN the GPU idle time inside the fetches is measured over the whole capture (it read
    # 0.0 ms when only fetches inside a step counted), and no saving per step is rated
    assert 0 < f.data["gpu_idle_ms_per_step"] <= f.data["wait_ms_per_step"]
    assert f.saving_s == 0 and "no saving is rated" in f.explanation


def test_an_analyzer_that_words_its_figures_per_step_is_reworded_on_a_run_without_steps():
    # GIVEN a per-parameter Adam loop in an import with no steps (the fused-optimizer analyzer
    # words its figures "per step")
    ops = [{"id": 1, "name": "Optimizer.step#Adam.step", "cat": "user_annotation", "thread": 1,
            "start_ns": 10 * MS, "dur_ns": 5 * MS}]
    ops += [{"id": 2 + i, "name": "aten::mul_", "cat": "cpu_op", "parent_id": 1, "thread": 1,
             "start_ns": 10 * MS + i * 100_000, "dur_ns": 100_000, "phase": "optimizer"}
            for i in range(40)]
    ops += [{"id": 100 + i, "name": "torch::autograd::AccumulateGrad", "cat": "cpu_op",
             "thread": 1, "start_ns": 5 * MS + i * 1000, "dur_ns": 500,
             "input_shapes": "[[64, 64]]", "dtypes": '["float"]', "phase": "backward"}
            for i in range(4)]
    run = Run.from_tables(meta={"source": "import", "host_bandwidth": {"bytes_per_s": 1e10}},
                          ops=table(*ops))
    out = analyze(run, only=("fusion_optimizer",), write=False)
    assert not out.failed, out.failed
    (f,) = [f for f in out.findings if f.kind == "fusion.optimizer"]
    # THEN it speaks of the trace, not of a step it never saw
    assert not [t for t in _texts(f) if STEP_WORDS.search(t)], _texts(f)
    assert "in the trace" in f.explanation
    assert f.data["saving_per"] == "capture"


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
def test_analyzers_that_measure_per_step_say_why_a_trace_without_steps_gets_nothing():
    # GIVEN HTA's AlexNet benchmark: 41 syncs and 79 kernels, no ProfilerStep
    name = "hta_a100_alexnet_small/benchmark_result_2869224_1695835535_trace.json.gz"
    reasons = {s["analyzer"]: s["reason"] for s in analysis(name)[0].skipped}
    # THEN the sync and launch analyzers say why they found nothing, instead of silence
    assert "marks no steps" in reasons["host_syncs"]
    assert "marks no steps" in reasons["launch_bound"]
