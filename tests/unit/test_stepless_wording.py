"""Findings on a trace that marks no steps say what they measured (issue 19): the figures are
totals over the capture ("in the trace"), never "per step", and an import has no command for
``dsprof verify`` to rerun. Each analyzer words its figures so itself (``Context.words``,
``analyzers/step_words.py``); nothing rewords them afterwards. Held on the shared traces without
ProfilerStep spans, and on every synthetic case of ``test_analyzers_synthetic`` with its steps
taken away, so that every analyzer that can fire without steps is seen firing."""

from __future__ import annotations

import re
from functools import cache

import pyarrow as pa
import pytest

from dsprof.analyzers.registry import Analysis, analyze
from dsprof.analyzers.step_words import StepWords
from dsprof.run import Run
from tests.unit.shared_traces import NAMES, analysis
from tests.unit.test_analyzers_synthetic import CASES, MS, REGISTERED, table

# the phrases of a figure per training step, and a step number a trace without steps lacks
STEP_WORDS = re.compile(r"\b(?:per|a|each|of the|in the) step\b|/step\b|\bstep's\b|"
                        r"\bper-step\b|\bstep None\b", re.IGNORECASE)

STEPLESS = [n for n in NAMES if analysis(n)[1] is None]


def _texts(f) -> list[str]:
    return [f.title, f.explanation, *(e.text for e in f.evidence)]


def _step_words(out: Analysis) -> list[tuple[str, str]]:
    """(kind, text) of every finding text and GPU note of ``out`` that speaks of a step."""
    said = [(f.kind, t) for f in out.findings for t in _texts(f) if STEP_WORDS.search(t)]
    return said + [(n["finding_kind"], n["text"]) for n in out.notes
                   if n.get("kind") == "gpu" and STEP_WORDS.search(n["text"])]


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


def test_the_fused_optimizer_finding_on_a_trace_without_steps_gives_its_figures_in_the_trace():
    # GIVEN a per-parameter Adam loop in an import with no steps (on a run with steps the
    # fused-optimizer analyzer words its figures "per step")
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
    # THEN it speaks of the trace, not of a step it never saw: the analyzer words it so
    assert not [t for t in _texts(f) if STEP_WORDS.search(t)], _texts(f)
    assert "40 ops taking 4.000 ms in the trace at full speed" in f.explanation
    assert f.evidence[0].text.endswith("40 ops, 4.000 ms in the trace")
    assert f.data["saving_per"] == "capture"


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
def test_analyzers_that_measure_per_step_say_why_a_trace_without_steps_gets_nothing():
    # GIVEN HTA's AlexNet benchmark: 41 syncs and 79 kernels, no ProfilerStep
    name = "hta_a100_alexnet_small/benchmark_result_2869224_1695835535_trace.json.gz"
    reasons = {s["analyzer"]: s["reason"] for s in analysis(name)[0].skipped}
    # THEN the sync and launch analyzers say why they found nothing, instead of silence
    assert "marks no steps" in reasons["host_syncs"]
    assert "marks no steps" in reasons["launch_bound"]


# -- every analyzer, on synthetic imports without steps --------------------------------------

# Tables only a ``dsprof run``'s collectors write: an import never has them, and a dsprof run
# always marks steps (a loop with no step boundary is captured as one step)
RUN_ONLY_TABLES = ("dataloaders", "host_syncs", "anomalies", "compiles")

# The analyzers seen firing on an import without steps; every other one needs steps (a steps
# table, or ops and comms inside steps) and is silent there. A change to this set means an
# analyzer's reach changed: its wording without steps is then held by the test below.
FIRE_WITHOUT_STEPS = {"attention", "cpu_autocast", "data_parallel", "fragmentation", "fusion",
                      "fusion_optimizer", "gpu_idle", "input_pipeline", "precision",
                      "tensor_cores"}


def without_steps(run: Run) -> Run:
    """``run`` as an imported trace that marks no steps: no steps table, no step on any row,
    no script to rerun."""
    tables = {}
    for name in run.tables:
        if name == "steps" or name in RUN_ONLY_TABLES:
            continue
        t = run.table(name)
        if "step" in t.column_names:
            t = t.set_column(t.column_names.index("step"), "step",
                             pa.nulls(len(t), t.schema.field("step").type))
        tables[name] = t
    meta = {k: v for k, v in run.meta.items() if k != "target"}
    return Run.from_tables(meta={**meta, "source": "import"}, **tables)


def _fetches_then_kernels() -> Run:
    """An imported GPU trace with no ProfilerStep: five single-process batch fetches of 8 ms,
    each followed by 12 ms of kernels, the GPU idle during every fetch (the 2021 autograd-API
    trace's pattern). Its DataLoader wait and its GPU idle blocks are measured per capture."""
    fetch = "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__"
    ops = [{"id": i + 1, "name": fetch, "cat": "user_annotation", "thread": 1,
            "start_ns": 20 * i * MS, "dur_ns": 8 * MS, "phase": "data"} for i in range(5)]
    kernels = [{"name": "gemm", "kind": "compute", "category": "gemm", "stream": 7,
                "start_ns": (20 * i + 8) * MS, "dur_ns": 12 * MS} for i in range(5)]
    return Run.from_tables(meta={"source": "import"}, ops=table(*ops), kernels=table(*kernels))


STEPLESS_CASES = [(a, f"{k} without steps", lambda p=p: without_steps(p()))
                  for a, k, p, _ in CASES]
STEPLESS_CASES += [(a, "fetches then kernels", _fetches_then_kernels)
                   for a in ("input_pipeline", "gpu_idle")]


@cache
def _stepless_analysis(index: int) -> Analysis:
    analyzer, _, build = STEPLESS_CASES[index]
    run = build()
    assert run.facts.step.mean_s is None  # the case marks no steps
    return analyze(run, only=(analyzer,), write=False)


@pytest.mark.parametrize("index", range(len(STEPLESS_CASES)),
                         ids=[f"{a}:{k}" for a, k, _ in STEPLESS_CASES])
def test_an_analyzer_that_fires_on_a_trace_without_steps_speaks_of_no_step(index):
    # GIVEN an analyzer's case as an import that marks no steps
    out = _stepless_analysis(index)
    # THEN it runs (or is skipped with a reason), and what it finds speaks of the trace
    assert not out.failed, out.failed
    assert not _step_words(out), _step_words(out)
    for f in out.findings:
        if f.saving_s > 0:
            assert f.data.get("saving_per") in ("capture", "iteration"), (f.kind, f.data)


def test_every_analyzer_that_can_fire_without_steps_is_seen_firing():
    # every registered analyzer has a case here (through test_analyzers_synthetic's)
    assert {a for a, _, _ in STEPLESS_CASES} == REGISTERED
    fired = {a for i, (a, _, _) in enumerate(STEPLESS_CASES)
             if _stepless_analysis(i).findings or any(
                 n.get("kind") == "gpu" for n in _stepless_analysis(i).notes)}
    assert fired == FIRE_WITHOUT_STEPS


def test_the_figures_of_a_trace_without_steps_are_said_of_the_trace():
    # GIVEN five batch fetches with the GPU idle in each, and no ProfilerStep
    index = next(i for i, (a, k, _) in enumerate(STEPLESS_CASES)
                 if (a, k) == ("input_pipeline", "fetches then kernels"))
    (f,) = _stepless_analysis(index).findings
    # THEN the wait is the capture's total, said of the trace, with no saving rated
    assert f.title.endswith("waits 40.0 ms in the trace (it marks no steps) for its batches")
    assert "The trace marks no steps: no saving is rated." in f.explanation
    assert f.saving_s == 0


def test_step_words_say_a_figure_of_the_step_or_of_the_capture():
    with_steps, trace, run = (StepWords.of(True, False), StepWords.of(False, False),
                              StepWords.of(False, True))
    # a run with steps: the phrases the analyzers always printed (their texts unchanged)
    assert [with_steps.per_step, with_steps.a_step, with_steps.of_the_step,
            with_steps.each_steps, with_steps.slash_step] == [
        "per step", "a step", "of the step", "each step's", "/step"]
    # without steps: the capture's total, of an import's trace or of a dsprof run
    assert [trace.per_step, trace.a_step, trace.of_the_step, trace.each_steps,
            f"2 MiB{trace.slash_step}"] == [
        "in the trace", "in the trace", "of the trace", "the trace's", "2 MiB in the trace"]
    assert run.per_step == "in the run" and run.of_each_step == "of the run"
