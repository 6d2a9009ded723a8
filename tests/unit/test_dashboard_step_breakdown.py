"""The Overview's per-step breakdown, headline tiles, operator/kernel grids and colours, on a
real imported 2-rank NCCL trace (A100, sampled) and on hand-made intervals."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dsprof.dashboard.app import AppContext
from dsprof.dashboard.figures.overview import step_breakdown_figure
from dsprof.dashboard.op_tables import kernel_rows, op_rows
from dsprof.dashboard.palette import MEMORY_COLORS, STEP_COLORS, color_for, distinct_colors
from dsprof.dashboard.source import RunSource
from dsprof.ingest.importer import import_traces
from dsprof.metrics.step_breakdown import (
    CPU_CATEGORIES,
    GPU_BUSY,
    GPU_CATEGORIES,
    _sweep,
)
from dsprof.metrics.step_breakdown import step_breakdown as run_breakdown
from tests.conftest import trace_dir


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    run, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")],
                           tmp_path_factory.mktemp("bd") / "run")
    src = RunSource(run.path)
    yield src
    src.close()


def test_sweep_gives_each_instant_to_the_first_active_category():
    # GIVEN a kernel (0) over [10, 30), a runtime call (1) over [20, 50), a CPU op (2) over
    # [0, 100) and two steps [0, 40) and [40, 100)
    cat = np.array([0, 1, 2])
    start, end = np.array([10, 20, 0]), np.array([30, 50, 100])
    out = _sweep(cat, start, end, 3, np.array([0, 40]), np.array([40, 100]))
    # THEN step 1: kernel 20, runtime 10 (30-40), CPU op 10 (0-10); step 2: runtime 10,
    # CPU op 50; nothing is left for the last column (the caller fills "untraced")
    assert out.tolist() == [[20, 10, 10, 0], [0, 10, 50, 0]]


def test_gpu_steps_add_up_and_busy_time_is_the_union_of_device_events(gpu):
    bd = run_breakdown(gpu.run)
    assert bd.gpu and bd.categories == GPU_CATEGORIES
    # 2 ranks x 2 ProfilerSteps
    assert sorted(zip(bd.rank.tolist(), bd.step.tolist())) == [(0, 551), (0, 552), (1, 551),
                                                                (1, 552)]
    assert (bd.ns.sum(axis=1) == bd.dur_ns).all()  # every instant once
    # the four GPU categories together are the union of the kernels, copies and collectives
    # that ran within the step (computed here by merging intervals the plain way)
    busy = bd.ns[:, [bd.categories.index(c) for c in GPU_BUSY]].sum(axis=1)
    for k, (rank, step) in enumerate(zip(bd.rank, bd.step)):
        lo, hi = gpu.sql("SELECT start_ns, end_ns FROM steps WHERE rank = ? AND step = ?",
                         [int(rank), int(step)])[0]
        spans = gpu.sql("""SELECT greatest(start_ns, ?), least(start_ns + dur_ns, ?)
                           FROM kernels WHERE rank = ? AND kind <> 'sync'
                             AND start_ns < ? AND start_ns + dur_ns > ? ORDER BY 1""",
                        [lo, hi, int(rank), hi, lo])
        union, cur_lo, cur_hi = 0, None, None
        for a, b in spans:
            if cur_hi is None or a > cur_hi:
                union += (cur_hi - cur_lo) if cur_hi is not None else 0
                cur_lo, cur_hi = a, b
            else:
                cur_hi = max(cur_hi, b)
        union += (cur_hi - cur_lo) if cur_hi is not None else 0
        assert busy[k] == union
    # the GPU sits idle about half of each step on this trace (HTA: 53.6 % / 54.7 % idle)
    assert 0.4 < bd.gpu_idle_share() < 0.7
    # collectives run without compute beside them a quarter of each step (the comm finding)
    assert 0.15 < bd.share("communication") < 0.35


def test_breakdown_figure_stacks_one_bar_per_rank_and_step(gpu):
    fig = step_breakdown_figure(run_breakdown(gpu.run))
    assert fig.layout.barmode == "stack"
    assert all(list(t.x) == ["r0 s551", "r0 s552", "r1 s551", "r1 s552"] for t in fig.data)
    names = [t.name for t in fig.data]
    assert {"kernel", "communication", "CPU ops", "untraced"} <= set(names)
    colors = [t.marker.color for t in fig.data]
    assert len(set(colors)) == len(colors)  # no two categories share a colour
    assert colors == [STEP_COLORS[n] for n in names]  # and each keeps its own


def test_gpu_tiles_and_labels(gpu):
    from dsprof.dashboard.pages import operators, overview
    from tests.unit.test_dashboard_pages import ids

    layout = overview.layout(AppContext(gpu), {})
    found = ids(layout)
    assert {"tile-gpu-idle", "tile-mfu", "tile-launches", "tile-tensor-cores",
            "overview-breakdown"} <= found
    text = str(layout.to_plotly_json())
    # the average step in words, largest category first (untraced, then communication)
    assert re.search(r"Average profiled step, [\d.]+ ms: untraced [\d.]+ ms \(\d+\.\d %\), "
                     r"communication", text)
    assert "of compute-kernel time" in text and "of all kernel time" not in text
    # no peak FLOP/s for this device (no deviceProperties): MFU says unknown, and why
    assert "unknown" in text and "FLOPs known for" in text
    ops_text = str(operators.layout(AppContext(gpu), {}).to_plotly_json())
    assert "compute-kernel time" in ops_text


def test_ops_by_input_shape_and_kernels_with_occupancy(gpu):
    rows = op_rows(gpu, "shape")
    mm = [r for r in rows if r["key"] == "aten::mm"]
    # aten::mm runs with several shapes: one row per shape, the calls add up to all calls
    assert len(mm) > 1 and len({r["input_shapes"] for r in mm}) == len(mm)
    assert sum(r["count"] for r in mm) == gpu.sql(
        "SELECT count(*) FROM ops WHERE name = 'aten::mm' AND cat = 'cpu_op'")[0][0]
    kernels = {r["name"]: r for r in kernel_rows(gpu)}
    name, want = gpu.sql("""
        SELECT name, round(sum(occupancy * dur_ns) / sum(dur_ns), 1) FROM kernels
        WHERE occupancy IS NOT NULL GROUP BY name ORDER BY sum(dur_ns) DESC LIMIT 1""")[0]
    assert kernels[name]["occupancy_pct"] == pytest.approx(want)
    assert kernels[name]["blocks_per_sm"] is not None and kernels[name]["registers"] > 0
    # by kernel and launching op: the NCCL kernel splits by collective, its calls add up
    by_op = [r for r in kernel_rows(gpu, "op") if r["name"].startswith("ncclKernel_SendRecv")]
    assert {"nccl:all_to_all", "nccl:_all_gather_base"} <= {r["op"] for r in by_op}
    assert sum(r["count"] for r in by_op) == sum(
        r["count"] for n, r in kernels.items() if n.startswith("ncclKernel_SendRecv"))


def test_palette_is_fixed_and_distinct():
    for cats in (GPU_CATEGORIES, CPU_CATEGORIES):
        assert len({STEP_COLORS[c] for c in cats}) == len(cats)
    assert len(set(MEMORY_COLORS.values())) == len(MEMORY_COLORS)
    assert color_for("Sequential.0") == color_for("Sequential.0")
    keys = [f"module.{k}" for k in range(10)]
    colors = distinct_colors(keys)
    assert len(set(colors.values())) == len(keys)
    # a key's colour depends on the set of keys, not on their order
    assert distinct_colors(list(reversed(keys))) == colors


def test_dataloader_time_on_tb_plugins_resnet_sample(tmp_path):
    """tb_plugin's canonical sample (V100, DataLoader with num_workers=0): its Overview
    recommends worker processes because loading takes a large share of each step."""
    run, _ = import_traces([trace_dir("kineto_resnet50_v100_mem")
                            / "worker0.1623143089861.pt.trace.json.gz"], tmp_path / "run")
    src = RunSource(run.path)
    try:
        bd = run_breakdown(src.run)
        assert bd.gpu and len(bd) == 6
        assert (bd.ns.sum(axis=1) == bd.dur_ns).all()
        # the wait for batches is what the host does while the GPU has nothing queued: the
        # same time the input-pipeline analyzer finds (69.3 ms of a 176 ms step, ~40 %)
        loading = bd.ns[:, bd.categories.index("data loading")].sum()
        spans = src.sql("""SELECT sum(o.dur_ns) FROM ops o JOIN steps s
                           ON s.rank = o.rank AND s.step = o.step AND s.profiled
                           WHERE o.name LIKE 'enumerate(DataLoader)%'""")[0][0]
        # (less the moments the previous step's kernels still ran: the device comes first)
        assert 0.75 * spans <= loading <= spans
        assert 0.3 < bd.share("data loading") < 0.5
        assert bd.share("kernel") > 0.4
    finally:
        src.close()


def test_run_facts_read_in_words_and_units():
    from dsprof.dashboard.pages.overview import readable_facts

    facts = readable_facts({"world_size": 128, "step_median_s": 0.014873609,
                            "peak_bytes": 4800712, "events": 1187000, "ranks": [0, 1]})
    assert facts == {"world size": 128, "step median": "14.87 ms", "peak": "4.6 MiB",
                     "events": "1,187,000", "ranks": [0, 1]}


def test_many_steps_are_averaged_over_ranks_then_thinned():
    from dsprof.metrics.step_breakdown import StepBreakdown

    # GIVEN 4 ranks x 300 steps, rank r spending r ms in kernels per step of 10 ms
    rank = np.repeat(np.arange(4), 300)
    step = np.tile(np.arange(300), 4)
    ns = np.zeros((1200, len(GPU_CATEGORIES)), np.int64)
    ns[:, 0] = rank * 1_000_000
    ns[:, -1] = 10_000_000 - ns[:, 0]
    bd = StepBreakdown(True, GPU_CATEGORIES, rank, step, np.full(1200, 10_000_000), ns)
    fig = step_breakdown_figure(bd, max_bars=120)
    kernel = next(t for t in fig.data if t.name == "kernel")
    # THEN one bar per step (mean of the ranks: 1.5 ms), every 3rd of the 300 steps
    assert len(kernel.x) == 100 and kernel.x[:2] == ("0", "3")
    assert set(kernel.y) == {1.5}
    assert "mean of 4 ranks, one step in 3" in fig.layout.title.text


def test_mfu_is_unknown_when_flops_cover_too_little(tmp_path):
    """A100 trace: the peak is known, but its convolutions carry no shapes, so FLOPs cover
    almost none of the matrix-kernel time: MFU says unknown and why, never "0.0 %"."""
    from dsprof.dashboard.pages.overview import _breakdown
    from dsprof.dashboard.pages.overview_tiles import headline_tiles

    run, _ = import_traces([trace_dir("hta_a100_2rank_nccl_r0")], tmp_path / "run")
    src = RunSource(run.path)
    try:
        assert src.gpu.device and src.gpu.tensor_core["flops_coverage"] < 0.1
        tiles = {t.id: [c.children for c in t.children]
                 for t in headline_tiles(src, _breakdown(src)).children}
        label, value, note = tiles["tile-mfu"]
        assert label == "MFU"
        assert value == "unknown" and note.startswith("FLOPs known for 0 %")
        # HTA on this trace: 99.7 % of the idle time is host wait
        assert "100 % of the gaps wait for the host" in tiles["tile-gpu-idle"][2]
    finally:
        src.close()


def test_peak_by_module_keeps_ten_colours_apart():
    from dsprof.dashboard.figures.memory import peak_holdings_figure
    from dsprof.reports.memory import DevicePeak, Holding

    # GIVEN a peak held by 25 modules (a transformer's blocks), 1..25 MiB each
    mods = [Holding(f"model.layers.{k}", (k + 1) << 20, 1) for k in range(25)]
    peak = DevicePeak(0, "cuda:0", 400 << 20, None, None, 0, [], mods, [], 0)
    fig = peak_holdings_figure([peak], "module")
    # THEN the ten largest are drawn apart, the other 15 summed into one grey bar
    names = [t.name for t in fig.data]
    assert names[:10] == [f"model.layers.{k}" for k in range(24, 14, -1)]
    assert names[10] == "other modules (15)" and fig.data[10].x == (sum(range(1, 16)),)
    colors = [t.marker.color for t in fig.data]
    assert len(set(colors)) == len(colors)
    assert sum(sum(t.x) for t in fig.data) == sum(range(1, 26))  # nothing lost


def test_summary_json_carries_the_same_breakdown(gpu):
    """One definition: `dsprof summary --json` prints what the Overview draws."""
    import orjson
    from click.testing import CliRunner

    from dsprof.cli.summary import summary_command

    res = CliRunner().invoke(summary_command, [str(gpu.path), "--json", "--findings", "0"])
    assert res.exit_code == 0, res.output
    doc = orjson.loads(res.output)["step_breakdown"]
    assert doc == orjson.loads(orjson.dumps(gpu.step_breakdown.to_json()))
    assert doc["kind"] == "gpu" and doc["categories"] == list(GPU_CATEGORIES)
    assert [(s["rank"], s["step"]) for s in doc["steps"]] == [(0, 551), (0, 552), (1, 551),
                                                              (1, 552)]
    assert all(sum(s["ns"].values()) == s["dur_ns"] for s in doc["steps"])
