"""The dashboard reads at a glance: the timeline opens on the profiled steps, the steps lane
is numbered, ticks and memory axes carry their units, and the Overview puts its findings
first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dsprof
from dsprof.dashboard.app import AppContext
from dsprof.dashboard.figures.timeline import timeline_figure
from dsprof.dashboard.pages import overview
from dsprof.dashboard.pages.timeline import initial_range, profiled_window
from dsprof.dashboard.source import RunSource
from dsprof.dashboard.timeline import STEP


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """8 real training steps on CPU, steps 4-5 profiled."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out = tmp_path_factory.mktemp("dash") / "run"
    with dsprof.profile(out, schedule={"wait": 2, "warmup": 1, "active": 2}, quiet=True,
                        sample_ms=0):
        for _ in range(8):
            model(torch.randn(16, 32)).sum().backward()
            opt.step()
            opt.zero_grad()
    src = RunSource(out)
    yield src
    src.close()


def test_timeline_opens_on_the_profiled_steps(cpu_run):
    index = cpu_run.timeline
    x0, x1 = initial_range(cpu_run, {}, np.zeros(0, np.int64))
    assert (x0, x1) == profiled_window(cpu_run)
    lo, hi = cpu_run.sql("SELECT min(start_ns), max(end_ns) FROM steps WHERE profiled")[0]
    # THEN the opening range holds the profiled steps with a little context, not the run
    assert x0 < lo - index.t0_ns and x1 > hi - index.t0_ns
    assert (x1 - x0) < 0.8 * index.span_ns
    # AND a query still wins over it
    assert initial_range(cpu_run, {"start": str(index.t0_ns), "end": str(index.t0_ns + 10**6)},
                         np.zeros(0, np.int64))[0] < 0


def test_steps_lane_is_numbered_and_axes_carry_units(cpu_run):
    index = cpu_run.timeline
    fig = timeline_figure(index, index.window(), memory=cpu_run.memory_series)
    steps = next(t for t in fig.data if t.name == "step")
    want = sorted(int(r) for r in index.ref[index.kind == STEP])
    assert sorted(int(s) for s in steps.text) == want
    assert fig.layout.xaxis.ticksuffix == " ms" or fig.layout.xaxis2.ticksuffix == " ms"
    memory = [t for t in fig.data if t.type == "scatter"]
    if memory:  # the memory row is in MiB, not decimal M of bytes
        assert fig.layout.yaxis2.title.text == "MiB"
        assert "MiB" in memory[0].hovertemplate


def test_overview_puts_findings_before_the_run_facts(cpu_run):
    layout = overview.layout(AppContext(cpu_run, cpu_run), {})
    order = []
    stack = [layout]
    while stack:  # depth-first, in document order
        c = stack.pop(0)
        if getattr(c, "id", None):
            order.append(c.id)
        children = getattr(c, "children", None)
        if isinstance(children, list):
            stack[:0] = children
        elif children is not None and not isinstance(children, str):
            stack.insert(0, children)
    assert order.index("overview-findings") < order.index("overview-steps")
    assert order.index("overview-findings") < order.index("run-facts")


def test_grid_columns_have_units_readable_headers_and_no_empty_columns():
    from dsprof.dashboard.grid_columns import column, columns_for

    rows = [{"collective": "all_reduce", "skew_ns": 231074000, "in_bytes": 21004288,
             "flops": 2365150633984, "gpu_ms": None}]
    cols = {c["field"]: c for c in columns_for(rows)}
    assert "gpu_ms" not in cols  # no row has a value: no empty column
    assert cols["skew_ns"]["headerName"] == "skew"
    assert "/ 1000000) + ' ms'" in cols["skew_ns"]["valueFormatter"]["function"]
    assert "MiB" in cols["in_bytes"]["valueFormatter"]["function"]
    assert cols["flops"]["headerName"] == "FLOPs"
    assert "valueFormatter" not in cols["collective"]
    assert column("group_size")["headerName"] == "group size"


def test_timeline_colours_are_stable_and_distinct(cpu_run):
    from dsprof.dashboard.figures.timeline import COLORS

    index = cpu_run.timeline
    whole = timeline_figure(index, index.window(), memory=cpu_run.memory_series)
    zoomed = timeline_figure(index, index.window(*profiled_window(cpu_run)),
                             memory=cpu_run.memory_series)
    mem = [[t.line.color for t in f.data if t.type == "scatter"] for f in (whole, zoomed)]
    assert mem[0] == mem[1] and all(c is not None for c in mem[0])
    # a collective never shares the communication kernels' colour
    assert COLORS["collective"] != COLORS["kernel communication"]
    # wide spans get a border so neighbours stay apart; pixel-wide ones keep their colour
    # (over every op trace of both views: which one holds a wide op depends on the timing)
    widths = [w for f in (whole, zoomed) for t in f.data
              if t.type == "bar" and t.name.startswith("op") for w in t.marker.line.width]
    assert max(widths) > 0 and min(widths) == 0


def test_search_finds_spans_by_name_earliest_first(cpu_run):
    from dsprof.dashboard.timeline_queries import search_spans

    index = cpu_run.timeline
    hits = search_spans(cpu_run, "ADDMM")  # case-insensitive, part of the name
    assert len(hits) > 0
    assert all("addmm" in str(index.names[index.name[i]]).lower() for i in hits)
    assert list(index.start[hits]) == sorted(index.start[hits])
    assert len(search_spans(cpu_run, "no-such-op-anywhere")) == 0
    assert len(search_spans(cpu_run, "  ")) == 0


def test_range_summary_clips_spans_to_the_range(cpu_run):
    from dsprof.dashboard.timeline_queries import range_summary

    index = cpu_run.timeline
    hits = np.flatnonzero([str(index.names[c]) == "aten::addmm" for c in index.name])
    first = int(hits[0])
    a, b = int(index.start[first]), int(index.end[first])
    lines = range_summary(cpu_run, a, b)
    # THEN the range is the addmm's, and its time is the range's time, not more
    assert lines[0].endswith("in range")
    ops = next(line for line in lines if line.startswith("host ops"))
    from dsprof.dashboard.text import fmt_ns

    assert f"aten::addmm {fmt_ns(b - a)}" in ops  # clipped to the range: never longer than it
    whole = range_summary(cpu_run, None, None)
    assert any(line.startswith("host ops") for line in whole)
    # a range found by binary search counts what the whole-array scan counts
    mid = a  # around the addmm, in the profiled steps
    near = range_summary(cpu_run, mid - 10**6, mid + 10**6)
    inside = (index.start < mid + 10**6) & (index.end > mid - 10**6) & (index.kind == 1)
    assert f"host ops ({int(inside.sum()):,}):" in " ".join(near)


def test_a_kernel_links_to_the_op_that_launched_it(tmp_path):
    from dsprof.dashboard.pages.timeline import flow_trace
    from dsprof.dashboard.timeline import KERNEL, OP
    from dsprof.dashboard.timeline_queries import launch_flow
    from dsprof.ingest.importer import import_traces
    from tests.conftest import trace_dir

    # GIVEN a real A100 trace whose kernels carry the op that launched them (ac2g flows)
    run_dir, _ = import_traces([trace_dir("hta_a100_2rank_nccl_r0")], tmp_path / "run")
    src = RunSource(run_dir.path)
    try:
        index = src.timeline
        pos = int(np.flatnonzero(index.kind == KERNEL)[100])
        op, kernel = launch_flow(src, pos)
        # THEN the arrow goes from that op (kernels.op_id) to the kernel, op first in time
        (op_id,) = src.sql("SELECT op_id FROM kernels WHERE rank = ? AND start_ns = ?",
                           [int(index.rank[pos]), int(index.ref[pos])])[0]
        assert kernel == pos and int(index.kind[op]) == OP and int(index.ref[op]) == op_id
        arrow = flow_trace(src, (op, kernel))
        assert arrow.x[0] <= arrow.x[1] and list(arrow.y) == [int(index.lane[op]),
                                                              int(index.lane[kernel])]
        # AND an op has no launch arrow of its own
        assert launch_flow(src, op) is None
    finally:
        src.close()


def test_gpu_overview_says_idle_mfu_and_launches(tmp_path):
    from dsprof.dashboard.pages.overview import gpu_headlines
    from dsprof.ingest.importer import import_traces
    from tests.conftest import trace_dir

    run_dir, _ = import_traces([trace_dir("hta_a100_2rank_nccl_r0")], tmp_path / "run")
    src = RunSource(run_dir.path)
    try:
        lines = gpu_headlines(src.gpu)
        # THEN the idle time and its main cause (HTA: ~99.8 % host wait on this trace) show,
        # with the launch statistics
        idle = next(line for line in lines if "GPU idle" in line)
        assert "100 % waiting for the host" in idle
        assert any("kernel launches" in line for line in lines)
    finally:
        src.close()


def test_a_link_to_a_step_outlines_the_step(cpu_run):
    from dsprof.dashboard.pages import timeline

    layout = timeline.layout(AppContext(cpu_run, cpu_run), {"step": "4"})
    stack, store = [layout], None
    while stack:
        c = stack.pop()
        if getattr(c, "id", None) == "timeline-highlight":
            store = c
        children = getattr(c, "children", None)
        if isinstance(children, list):
            stack += children
    index = cpu_run.timeline
    assert store is not None and store.data
    assert all(int(index.kind[i]) == STEP and int(index.ref[i]) == 4 for i in store.data)


def test_overview_puts_each_loop_of_a_sweep_side_by_side(tmp_path):
    # GIVEN a sweep of two configurations, 10 steps each, profiled in process
    from tests.unit.test_diff_loops import sweep

    out = sweep(tmp_path / "run", (16, 256))
    src = RunSource(out)
    try:
        layout = overview.layout(AppContext(src, src), {})
        table = _find(layout, "overview-loops")
        # THEN one row a loop under the header, the profiled one the second configuration's
        rows = [[str(cell.children) for cell in row.children] for row in table.children]
        assert rows[0][:4] == ["loop", "steps", "marked by", "counted"]
        assert [r[:3] for r in rows[1:]] == [["0", "0-9", "optimizer"],
                                             ["1 (profiled)", "10-19", "optimizer"]]
        counted = [len(loop.step.counted) for loop in src.run.facts.loops]
        assert [r[3] for r in rows[1:]] == [str(n) for n in counted]
    finally:
        src.close()


def _find(component, cid):
    stack = [component]
    while stack:
        c = stack.pop()
        if getattr(c, "id", None) == cid:
            return c
        children = getattr(c, "children", None)
        if isinstance(children, list):
            stack.extend(children)
        elif children is not None and not isinstance(children, str):
            stack.append(children)
    raise AssertionError(f"no component {cid}")

