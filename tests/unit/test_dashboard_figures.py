"""Figure builders and page data, without a browser, on real imported traces."""

from __future__ import annotations

import numpy as np
import pytest

from dsprof.dashboard.figures.compare import applied_pairs, delta_figure
from dsprof.dashboard.figures.findings import (
    has_pareto,
    pareto_figure,
    savings_figure,
)
from dsprof.dashboard.figures.memory import memory_over_time_figure, peak_breakdown_figure
from dsprof.dashboard.figures.overview import (
    kernel_category_figure,
    kernel_type_figure,
    samples_figure,
    step_time_figure,
)
from dsprof.dashboard.memseries import DeviceSeries
from dsprof.dashboard.op_tables import kernel_rows, op_rows
from dsprof.dashboard.palette import BAD, GOOD
from dsprof.dashboard.source import RunSource
from dsprof.findings import Finding
from dsprof.ingest.importer import import_traces
from dsprof.reports.diff import Applied, Delta
from tests.conftest import trace_dir


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    run, _ = import_traces([trace_dir("hta_a100_2rank_nccl_r0")],
                           tmp_path_factory.mktemp("fig") / "run")
    src = RunSource(run.path)
    yield src
    src.close()


@pytest.fixture(scope="module")
def mem(tmp_path_factory):
    run, _ = import_traces([trace_dir("kineto_resnet50_v100_mem") /
                            "worker0.1623143089861.pt.trace.json.gz"],
                           tmp_path_factory.mktemp("mem") / "run")
    src = RunSource(run.path)
    yield src
    src.close()


def test_timeline_of_a_gpu_trace_has_every_span_on_its_lane(gpu):
    index = gpu.timeline
    n_ops, n_kernels, n_steps, n_comms = gpu.sql("""
        SELECT (SELECT count(*) FROM ops WHERE name NOT LIKE 'ProfilerStep#%'),
               (SELECT count(*) FROM kernels), (SELECT count(*) FROM steps),
               (SELECT count(*) FROM comms)""")[0]
    assert n_comms > 0 and "r0 comms" in index.lane_labels
    assert len(index) == n_ops + n_kernels + n_steps + n_comms
    assert np.all(np.diff(index.start) >= 0)
    streams = [lbl for lbl in index.lane_labels if " gpu" in lbl]
    n_streams = gpu.sql("SELECT count(DISTINCT stream) FROM kernels")[0][0]
    assert len(streams) == n_streams
    # a kernel sits on the lane of its own stream
    k = int(np.flatnonzero(index.kind == 2)[0])
    stream = gpu.sql("SELECT stream FROM kernels WHERE start_ns = ? LIMIT 1",
                     [int(index.ref[k])])[0][0]
    assert index.lane_labels[index.lane[k]].endswith(f"s{stream}")


def test_operator_and_kernel_rows(gpu):
    by_name = op_rows(gpu, "name")
    assert by_name[0]["self_ms"] >= by_name[-1]["self_ms"]
    total = gpu.sql("SELECT sum(self_ns) / 1e6 FROM ops WHERE cat = 'cpu_op'")[0][0]
    assert sum(r["self_ms"] for r in by_name) == pytest.approx(total, rel=1e-3)
    assert any(r["gpu_ms"] for r in by_name)  # kernels link back to their ops
    phases = {r["key"] for r in op_rows(gpu, "phase")}
    assert {"forward", "backward"} <= phases
    kernels = kernel_rows(gpu)
    assert sum(r["percent"] for r in kernels) == pytest.approx(100, abs=0.5)
    assert any("nccl" in r["name"].lower() and r["kind"] == "communication" for r in kernels)


def test_overview_figures(gpu):
    s = gpu.summary
    steps = gpu.arrow("SELECT rank, step, dur_ns, profiled FROM steps ORDER BY step")
    fig = step_time_figure(steps, s.steps)
    assert list(fig.data[0].x) == steps.column("step").to_pylist()
    import pyarrow as pa

    waited = steps.append_column("data_wait_ns", pa.array([5_000_000] * steps.num_rows))
    wait = [t for t in step_time_figure(waited, s.steps).data if t.name == "waiting for data"]
    assert list(wait[0].y) == [5.0] * steps.num_rows
    pie = kernel_type_figure(s.kernel_types)
    assert "COMPUTATION" in pie.data[0].labels
    cats = kernel_category_figure(gpu.gpu.categories)
    assert "gemm" in cats.data[0].y and any("Tensor Cores" in t for t in cats.data[0].text)


def test_samples_figure_skips_empty_metrics():
    import pyarrow as pa

    samples = pa.table({"rank": [0, 0, 1], "t_ms": [0.0, 100.0, 0.0],
                        "cpu_util": [50.0, 80.0, 20.0], "gpu_util": [None, None, None]})
    fig = samples_figure(samples)
    assert [t.name for t in fig.data] == ["CPU % (of one core) r0", "CPU % (of one core) r1"]
    assert list(fig.data[0].y) == [50.0, 80.0]


def test_memory_series_keeps_every_peak(mem):
    series = mem.memory_series
    assert {s.device for s in series} == {"cpu", "cuda:0"}
    for s in series:
        at = s.sample(int(s.ts[0]), int(s.ts[-1]) + 1, points=200)
        assert len(at) <= 201
        assert s.total[at].max() == s.total.max()
    fig = memory_over_time_figure(series)
    assert len(fig.data) == 2 and all(len(t.x) <= 1001 for t in fig.data)
    # the axis is in MiB, as every memory label (never plotly's decimal M of bytes)
    assert fig.layout.yaxis.title.text == "MiB"
    top = max(series, key=lambda s: s.total.max())
    assert max(max(t.y) for t in fig.data) == top.total.max() / 2**20


def test_peak_breakdown_stacks_categories():
    from dsprof.reports.summary import MemoryPeak

    peaks = [MemoryPeak(0, "cuda:0", 300, "timeline", {"activation": 200, "parameter": 100}),
             MemoryPeak(0, "host", 900, "rss")]
    fig = peak_breakdown_figure(peaks)
    assert [t.name for t in fig.data] == ["activation", "parameter", "peak"]
    assert fig.data[2].y == ("r0 host (rss)",)


def test_memory_categories_stack_to_the_total():
    # GIVEN events of two categories
    ts = np.arange(6, dtype=np.int64) * 10
    nbytes = np.array([100, 50, -100, 30, 200, -50])
    cat = np.array([0, 1, 0, 1, 0, 1], np.int16)
    s = DeviceSeries(0, "cuda:0", ts, np.cumsum(nbytes), nbytes, cat,
                     ["activation", "parameter"])
    at = s.sample(0, 60, points=3)
    live = s.live_by_category(at)
    # THEN per-category live bytes add up to the total at every drawn point
    np.testing.assert_array_equal(live["activation"] + live["parameter"], s.total[at])
    assert s.total[at].max() == s.total.max() == 280


def finding(kind: str, key: str, **kw) -> Finding:
    return Finding(analyzer="t", kind=kind, key=key, title=f"{kind} {key}", **kw)


def test_findings_figures():
    # the checkpointing analyzer's data: the front of plans and the advised one
    data = {"peak": 100, "target": 60, "front": [
        {"peak": 100, "cost_s": 0.0, "freed": 0, "modules": []},
        {"peak": 50, "cost_s": 0.002, "freed": 50, "modules": ["blocks.0", "<b>x</b>"]}],
        "advised": {"peak": 50, "cost_s": 0.002, "modules": ["blocks.0"]}}
    f = finding("memory.checkpoint", "a", saving_bytes=50, data=data, apply={"DS_X": "1"})
    assert has_pareto(f) and not has_pareto(finding("x.y", "b"))
    fig = pareto_figure(f)
    assert [t.name for t in fig.data] == ["Pareto front", "advised"]
    assert list(fig.data[0].x) == [0.0, 2.0] and list(fig.data[0].y) == [100, 50]
    assert "<b>" not in fig.data[0].hovertext[1]
    g = finding("fusion.x", "c", saving_s=0.005)
    assert len(savings_figure([f, g]).data[0].x) == 1


def test_compare_figures_from_the_diff():
    fig = delta_figure([Delta("aten::mm", 5.0, 2.0), Delta("aten::<b>x</b>", 1.0, 1.5)])
    assert list(fig.data[0].x) == [-3.0, 0.5]
    # faster and slower differ in colour, hatch and words, never in colour alone
    assert fig.data[0].marker.color == (GOOD, BAD)
    assert fig.data[0].marker.pattern.shape == ("", "/")
    assert fig.data[0].text[0].startswith("faster") and fig.data[0].text[1].startswith("slower")
    assert "<b>" not in fig.data[0].y[1]
    applied = Applied("f-1", "t", predicted_saving_ms=2.0, measured_saving_ms=1.5,
                      predicted_saving_bytes=0, measured_saving_bytes=100)
    assert applied_pairs(applied) == {"saving_s": (0.002, 0.0015)}


def test_missing_tables_name_the_command(gpu):
    assert not gpu.has("memory")
    msg = gpu.missing("memory")
    assert "no memory table" in msg and "dsprof run" in msg


def test_evidence_links_open_the_timeline_where_they_point(gpu):
    from dsprof.dashboard.pages.findings import evidence_href
    from dsprof.dashboard.pages.timeline import details, highlight_indices, initial_range
    from dsprof.dashboard.timeline import KERNEL
    from dsprof.findings import Evidence

    index = gpu.timeline
    assert evidence_href(Evidence("text only")) is None
    step, s0, s1 = gpu.sql("SELECT step, start_ns, end_ns FROM steps WHERE rank = 0 "
                           "ORDER BY step LIMIT 1")[0]
    href = evidence_href(Evidence("a step", rank=0, step=step))
    assert href == f"/timeline?step={step}&rank=0"
    # a step opens on that step, padded
    x0, x1 = initial_range(gpu, {"step": str(step), "rank": "0"}, np.zeros(0, np.int64))
    assert x0 < s0 - index.t0_ns and x1 > s1 - index.t0_ns
    assert (x1 - x0) < (s1 - s0) * 1.3
    # ops open around themselves and are found on their lanes
    op_id, start, dur = gpu.sql("SELECT id, start_ns, dur_ns FROM ops WHERE rank = 0 "
                                "AND name = 'aten::mm' LIMIT 1")[0]
    hl = highlight_indices(gpu, 0, [op_id])
    assert len(hl) == 1 and index.ref[hl[0]] == op_id
    x0, x1 = initial_range(gpu, {}, hl)
    assert x0 < start - index.t0_ns < start + dur - index.t0_ns < x1
    # a kernel's details name the op that launched it
    k = next(int(i) for i in np.flatnonzero(index.kind == KERNEL)
             if gpu.sql("SELECT op_id FROM kernels WHERE start_ns = ? LIMIT 1",
                        [int(index.ref[i])])[0][0] is not None)
    lines = details(gpu, KERNEL, int(index.rank[k]), int(index.ref[k]))
    assert any(line.startswith("launched by: ") for line in lines)


def test_comm_figures_from_the_analyzers(tmp_path):
    from dsprof.dashboard.figures.comms import bandwidth_figure, overlap_figure, skew_figure
    from dsprof.metrics.comm.overlap import Overlap
    from dsprof.metrics.comm.skew import RankSkew

    fig = overlap_figure([Overlap(0, 1, 10_000_000, 4_000_000), Overlap(1, 1, 8_000_000, 0)])
    assert list(fig.data[0].x) == ["r0 s1", "r1 s1"]
    assert list(fig.data[1].y) == [6.0, 8.0]  # exposed ms
    skew = skew_figure([RankSkew(0, 10, 2, 3_000_000, 1_000_000, 2),
                        RankSkew(1, 10, 8, 0, 5_000_000, 2)])
    assert list(skew.data[1].y) == [1.0, 5.0]
    run, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")], tmp_path / "run")
    src = RunSource(run.path)
    try:
        calls = src.arrow("SELECT collective, in_bytes, busbw_gbps FROM comms")
        bw = bandwidth_figure(calls)
        assert {t.name for t in bw.data} == {"all_to_all", "all_reduce", "all_gather"}
    finally:
        src.close()


def test_the_phase_figure_says_which_steps_its_phases_are_of():
    from dsprof.dashboard.figures.overview import phase_figure
    from dsprof.reports.summary_data import PhaseTime

    phases = [PhaseTime("forward and the rest", 5.4, 44.7), PhaseTime("backward", 5.8, 48.7)]
    assert phase_figure(phases).layout.title.text == "Time by phase (profiled steps)"
    full = phase_figure(phases, "Time by phase at full speed (mean of 53 steps, ms a step)")
    assert full.layout.title.text.startswith("Time by phase at full speed")
    assert list(full.data[0].y) == ["forward and the rest", "backward"]
