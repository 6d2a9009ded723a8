"""Every string from a trace or a run is data, never markup and never a terminal escape.

A real trace is imported, then its names (ops, modules, kernels, devices, the command line in
meta.json) are replaced by hostile text; every command that prints must show that text
literally, and nothing but rich's own colour codes may reach the terminal."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from dsprof.cli import main
from dsprof.ingest.importer import import_traces
from dsprof.render.safe_text import clean, esc, make_console, plain
from dsprof.rundir import RunDir
from tests.conftest import trace_dir

HOSTILE = "[/bold]close[/][link=https://evil.example]x\x1b]0;pwned\x07\x1b[2J\u202eY"
# A file name cannot hold "/", so the run directory's own name gets its own hostile text.
HOSTILE_DIR = "run[bold]x[link=https:evil]\x1b]0;pwned\x07"
# What the terminal may receive: rich's own SGR colour codes, nothing else.
_SGR = re.compile(r"\x1b\[[0-9;]*m")

_POISON = {"ops": ("name", "module"), "kernels": ("name",), "memory": ("device", "module"),
           "memory_series": ("device",), "modules": ("name", "type"),
           # the per-rank aggregate of op names that summary's top ops read
           "op_time": ("name",)}


def assert_inert(out: str) -> None:
    bare = _SGR.sub("", out)
    assert "\x1b" not in bare and "\x07" not in bare and "\u202e" not in bare, repr(out[:400])
    assert "Traceback" not in out and "MarkupError" not in out


def _retitle(node: object) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("title"), str):
            node["title"] = HOSTILE + node["title"]
        for v in node.values():
            _retitle(v)
    elif isinstance(node, list):
        for v in node:
            _retitle(v)


def poison(run: Path) -> Path:
    """Rewrite the run's name-like columns (and its argv) with hostile text."""
    rundir = RunDir(run)
    for name, cols in _POISON.items():
        for part in rundir.table_dir(name).glob("*.parquet"):
            data = pq.read_table(part)
            for col in cols:
                if col in data.column_names:
                    i = data.column_names.index(col)
                    values = [HOSTILE + str(v) for v in data.column(i).to_pylist()]
                    data = data.set_column(i, col, pa.array(values, pa.string()))
            pq.write_table(data, part)
    rundir.update_meta(argv=[HOSTILE, "--lr", HOSTILE])
    findings = rundir.path / "findings.json"
    if findings.exists():
        doc = json.loads(findings.read_text())
        _retitle(doc)
        findings.write_text(json.dumps(doc))
    return run


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hostile")
    out = {}
    for trace in ("hta_amd_mi250", "hta_memory_timeline"):
        run, _ = import_traces([trace_dir(trace)], base / trace / HOSTILE_DIR)
        CliRunner().invoke(main, ["analyze", str(run.path)], catch_exceptions=False)
        out[trace] = poison(run.path)
    return out


@pytest.mark.parametrize(("args", "shows"), [
    (["summary", "{gpu}"], HOSTILE), (["analyze", "{gpu}"], None),
    (["gpu", "{gpu}"], HOSTILE), (["memory", "{mem}"], HOSTILE),
    (["summary", "{mem}"], HOSTILE), (["diff", "{gpu}", "{mem}"], HOSTILE_DIR)])
def test_commands_print_hostile_names_literally(hostile_runs, args, shows):
    argv = [a.format(gpu=hostile_runs["hta_amd_mi250"], mem=hostile_runs["hta_memory_timeline"])
            for a in args]
    res = CliRunner(env={"COLUMNS": "1000"}).invoke(main, argv, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert_inert(res.output)
    # shown, not interpreted: the markup text is there to read, escapes written out
    if shows is not None:
        assert clean(shows) in res.output


def test_rich_console_on_a_terminal_emits_only_colour_codes():
    buf = io.StringIO()
    console = make_console(file=buf, force_terminal=True, width=200)
    from rich.table import Table

    t = Table()
    t.add_column("op")
    t.add_row(plain(HOSTILE))
    t.add_row(HOSTILE.replace("[/bold]", ""))  # a raw cell a renderer forgot to wrap
    console.print(f"[bold]op[/] {esc(HOSTILE)}")
    console.print(t)
    out = buf.getvalue()
    assert_inert(out)
    assert "[/bold]close" in out and "\\x1b[2J" in out and "\\u202e" in out
    assert "\x1b[1m" in out  # dsprof's own markup still styles


def test_run_closing_lines_and_findings_escape(hostile_runs):
    from dsprof.analyzers.registry import analyze
    from dsprof.render.summary import render_short
    from dsprof.reports.summary import summarize
    from dsprof.run import load

    buf = io.StringIO()
    console = make_console(file=buf, force_terminal=True, width=120)
    with load(hostile_runs["hta_amd_mi250"]) as run:
        render_short(summarize(run), console, HOSTILE, analyze(run))
    assert_inert(buf.getvalue())
    assert "top ops: [/bold]close" in buf.getvalue()


def test_verify_lines_escape(tmp_path):
    from dsprof.apply.verify import Verification
    from dsprof.cli.verify import render

    v = Verification(baseline=tmp_path, applied=Path(HOSTILE), findings=[
        {"id": HOSTILE, "title": HOSTILE, "apply": {"DS_X": HOSTILE}}],
        baseline_step_s=0.2, predicted_step_s=0.1, measured_step_s=0.1, steps_used=(3, 3),
        baseline_peak=None, predicted_peak=None, measured_peak=None)
    buf = io.StringIO()
    render(v, make_console(file=buf, force_terminal=True, width=300))
    assert_inert(buf.getvalue())
    assert buf.getvalue().count("[/bold]close") >= 3


def test_log_lines_write_control_characters_visibly(tmp_path):
    from dsprof import log

    stream = io.StringIO()
    log.configure()
    handler = next(h for h in log.logger.handlers if h.get_name() == "stderr")
    old = handler.setStream(stream)
    try:
        log.logger.warning("op %s took long", HOSTILE)
    finally:
        handler.setStream(old)
    assert_inert(stream.getvalue())
    assert "\\x1b[2J" in stream.getvalue()


def test_clean_keeps_newlines_and_text():
    assert clean("a\tb\nc ü 中") == "a\tb\nc ü 中"
    assert clean("\x00\x9b\x7f") == "\\x00\\x9b\\x7f"
