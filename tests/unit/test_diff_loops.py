"""``dsprof diff`` of two runs that each held several loops one after another (a sweep run
before and after a change): loop by loop, each side's step time by the one rule
(``run.facts.loops``), on the terminal, in JSON and on the dashboard's Compare page."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console

import dsprof
from dsprof.dashboard.app import AppContext
from dsprof.dashboard.pages import compare
from dsprof.dashboard.source import RunSource
from dsprof.render.diff import render_diff
from dsprof.reports.diff import diff
from dsprof.run import load


def sweep(out: Path, widths: tuple[int, ...]) -> Path:
    """A sweep profiled in process: a new model and Adam per width, 10 steps each."""
    with dsprof.profile(out, schedule={"wait": 1, "warmup": 1, "active": 2}, quiet=True,
                        sample_ms=0):
        for width in widths:
            model = torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.ReLU(),
                                        torch.nn.Linear(width, 8))
            opt = torch.optim.Adam(model.parameters(), lr=0.01)
            for _ in range(10):
                model(torch.randn(16, 32)).sum().backward()
                opt.step()
                opt.zero_grad()
            del model, opt
    return out


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sweeps")
    return {"a": sweep(base / "a", (16, 256)), "b": sweep(base / "b", (16, 64)),
            "three": sweep(base / "three", (16, 64, 128))}


def test_two_sweeps_compare_loop_by_loop(sweeps):
    with load(sweeps["a"]) as a, load(sweeps["b"]) as b:
        d = diff(a, b)
        la, lb = a.facts.loops, b.facts.loops
    # THEN one row a loop, each side's figures those of its run's facts
    assert [r.loop for r in d.loops] == [0, 1]
    for row, x, y in zip(d.loops, la, lb):
        assert (row.a_steps, row.b_steps) == (x.step.steps, y.step.steps)
        assert row.a_median_ms == pytest.approx(x.step.median_s * 1e3)
        assert row.b_median_ms == pytest.approx(y.step.median_s * 1e3)
    assert not [w for w in d.warnings if "loop" in w]
    # AND the terminal and JSON show them
    out = io.StringIO()
    render_diff(d, Console(file=out, width=160, color_system=None))
    assert "Step time by loop (B against A, by position)" in out.getvalue()
    assert [r["loop"] for r in d.to_json()["loops"]] == [0, 1]


def test_sweeps_of_different_lengths_say_which_loops_the_step_times_are(sweeps):
    with load(sweeps["a"]) as a, load(sweeps["three"]) as three:
        d = diff(a, three)
    # THEN the first two loops compare by position, and a warning says the runs differ
    assert [r.loop for r in d.loops] == [0, 1]
    (w,) = [w for w in d.warnings if "loop" in w]
    assert w.startswith("A held 2 loops one after another and B 3")
    assert "A's loop 1 with B's loop 2" in w and "matched by position" in w


def test_the_compare_page_shows_the_loops_and_the_warnings(sweeps):
    with load(sweeps["a"]) as a, load(sweeps["three"]) as three:
        diff(a, three)  # analyzes both: the dashboard only reads findings
    a, b = RunSource(sweeps["a"], "A"), RunSource(sweeps["three"], "B")
    try:
        layout = compare.layout(AppContext(a, b), {})
        found, stack = {}, [layout]
        while stack:
            c = stack.pop()
            if getattr(c, "id", None):
                found[c.id] = c
            children = getattr(c, "children", None)
            stack += children if isinstance(children, list) else []
        text = str(layout)
    finally:
        a.close()
        b.close()
    rows = found["compare-loops"].children
    assert len(rows) == 3  # the header and loops 0, 1
    assert "warning: A held 2 loops one after another and B 3" in text
