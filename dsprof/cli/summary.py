"""``dsprof summary RUN``.

On a run whose summary is stored and current (``dsprof import`` stores it, and so does the first
``summary`` that computes it: :mod:`dsprof.reports.stored`), the command renders that file and
findings.json without opening the tables, so it imports neither pyarrow, DuckDB nor numpy.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from dsprof.findings_file import Analysis, read_findings_file
from dsprof.render.findings import render_findings
from dsprof.render.safe_text import make_console
from dsprof.render.summary import render_full
from dsprof.reports import stored
from dsprof.reports.summary_data import RunSummary

FINDINGS_SHOWN = 5
"""``--findings`` by default."""


@click.command("summary")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the same facts as one JSON document.")
@click.option("--top", default=stored.SUMMARY_TOP, show_default=True, help="How many ops to list.")
@click.option("--findings", "n_findings", default=FINDINGS_SHOWN, show_default=True,
              help="How many findings to list (0: none).")
def summary_command(run_dir: str, as_json: bool, top: int, n_findings: int) -> None:
    """What RUN spent its time and memory on: run facts, step time, time by phase, top ops,
    GPU kernel types, peak memory, and the top findings ranked by estimated saving (from
    findings.json; the analyzers run first if the run was never analyzed)."""
    from_store = _stored(run_dir, top, n_findings)
    summary, findings = from_store or _computed(run_dir, top, n_findings)
    if as_json:
        doc = summary.to_json()
        doc["step_breakdown"] = _step_breakdown(run_dir)
        if findings is not None:
            doc["findings"] = findings.to_json()["findings"][:n_findings]
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2
                                      | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode())
        sys.stdout.write("\n")
        return
    _render(run_dir, summary, findings, n_findings, make_console(highlight=False),
            from_store is not None)


def _render(run_dir: str, summary: RunSummary, findings: Analysis | None, n_findings: int,
            console: Any, from_store: bool) -> None:
    with stored.rendering(run_dir, "summary") if from_store else contextlib.nullcontext():
        render_full(summary, console)
    if findings is not None:
        render_findings(findings, console, top=n_findings, detail=min(n_findings, 2))


def render_stored(run_dir: str, console: Any) -> bool:
    """Render ``dsprof summary RUN_DIR`` (default options) from the stored summary and
    findings into ``console``, as the command would; False when they are not stored."""
    from_store = _stored(run_dir, stored.SUMMARY_TOP, FINDINGS_SHOWN)
    if from_store is None:
        return False
    _render(run_dir, *from_store, FINDINGS_SHOWN, console, True)
    return True


def _stored(run_dir: str, top: int, n_findings: int) -> tuple[RunSummary, Analysis | None] | None:
    """The stored summary and findings, when both are there and current; else None."""
    if not stored.finished_and_ingested(run_dir):
        return None
    doc = stored.load_report(run_dir, "summary", stored.summary_params(top))
    if doc is None:
        return None
    findings = read_findings_file(run_dir) if n_findings else None
    if n_findings and findings is None:
        return None  # never analyzed: the full path runs the analyzers
    try:
        summary = RunSummary.from_json(doc)
    except (KeyError, TypeError, ValueError):
        return None  # not what this version stores: compute it again
    # the run's path as this command was given it, as the full path's Run would show it
    summary.facts["run"] = str(Path(run_dir))
    return summary, findings


def _computed(run_dir: str, top: int, n_findings: int) -> tuple[RunSummary, Analysis | None]:
    from dsprof.analyzers.registry import analyze, read_findings
    from dsprof.reports.summary import summarize
    from dsprof.run import load

    with load(run_dir) as run:
        summary = summarize(run, top=top)
        stored.save_report(run.path, "summary", stored.summary_params(top), summary.to_json())
        findings = read_findings(run) if n_findings else None
        if n_findings and findings is None:
            findings = analyze(run)
    return summary, findings


def _step_breakdown(run_dir: str) -> dict:
    """JSON only (the text report has time by phase, the breakdown's sum over steps): the
    per-step breakdown the dashboard's Overview shows.

    Computed from the tables by the first ``summary --json`` of a run and stored beside the
    other reports (a sweep over every op: ~1.5 s on a 10M-event run), so the next ones read it
    without pyarrow or DuckDB. Not computed at import: most users never ask for it.
    """
    if stored.finished_and_ingested(run_dir):
        doc = stored.load_report(run_dir, "step_breakdown", {})
        if doc is not None:
            return doc
    from dsprof.metrics.step_breakdown import step_breakdown
    from dsprof.run import load

    with load(run_dir) as run:
        doc = step_breakdown(run).to_json()
        if stored.finished_and_ingested(run_dir):
            stored.save_report(run.path, "step_breakdown", {}, doc)
    return doc
