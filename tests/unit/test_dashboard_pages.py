"""Every page lays out on runs with very different tables (memory only, CPU only, GPU,
multi-rank, ROCm), names what is missing, and serializes; no browser needed."""

from __future__ import annotations

import json

import plotly
import pytest

from dsprof.dashboard.app import PAGES, AppContext
from dsprof.dashboard.source import RunSource
from dsprof.ingest.importer import import_traces
from tests.conftest import trace_dir

TRACES = ["hta_memory_timeline", "hta_cpu_only_gloo", "hta_sampled_2rank_nccl",
          "hta_amd_mi250"]


def ids(component) -> set[str]:
    out = set()
    stack = [component]
    while stack:
        c = stack.pop()
        if isinstance(c, (list, tuple)):
            stack.extend(c)
            continue
        if getattr(c, "id", None):
            out.add(c.id)
        children = getattr(c, "children", None)
        if children is not None and not isinstance(children, str):
            stack.append(children)
    return out


@pytest.mark.parametrize("trace", TRACES)
def test_every_page_lays_out(trace, tmp_path):
    run, _ = import_traces([trace_dir(trace)], tmp_path / "run")
    src = RunSource(run.path)
    ctx = AppContext(src, src)
    try:
        for page in PAGES:
            layout = page.layout(ctx, {})
            json.dumps(layout.to_plotly_json(), cls=plotly.utils.PlotlyJSONEncoder)
            found = ids(layout)
            for table in ("ops", "kernels", "memory"):
                if not src.has(table) and page.PATH in ("/operators",) and table != "memory":
                    assert f"missing-{table}" in found, (page.PATH, table)
            if page.PATH == "/memory":
                assert ("memory-over-time" in found) == src.has("memory")
            if page.PATH == "/timeline":
                assert ("timeline-graph" in found) == (src.has("ops") or src.has("steps"))
            if page.PATH == "/findings":
                assert "missing-findings" in found  # never analyzed: names the command
    finally:
        src.close()


def test_memory_only_run_draws_categories(tmp_path):
    run, _ = import_traces([trace_dir("hta_memory_timeline")], tmp_path / "run")
    src = RunSource(run.path)
    try:
        series = src.memory_series
        assert series and series[0].categories
        from dsprof.dashboard.figures.memory import memory_over_time_figure

        fig = memory_over_time_figure(series)
        stacked = [t for t in fig.data if t.stackgroup]
        assert {t.name.split()[-1] for t in stacked} >= {"parameter", "activation"}
        assert fig.data[0].x[0] < 60_000  # ms since the first event, not since the epoch
    finally:
        src.close()
