"""``dsprof summary RUN``."""

from __future__ import annotations

import sys

import click
import orjson

from dsprof.analyzers.registry import analyze, read_findings
from dsprof.metrics.step_breakdown import step_breakdown
from dsprof.render.findings import render_findings
from dsprof.render.safe_text import make_console
from dsprof.render.summary import render_full
from dsprof.reports.summary import summarize
from dsprof.run import load


@click.command("summary")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the same facts as one JSON document.")
@click.option("--top", default=15, show_default=True, help="How many ops to list.")
@click.option("--findings", "n_findings", default=5, show_default=True,
              help="How many findings to list (0: none).")
def summary_command(run_dir: str, as_json: bool, top: int, n_findings: int) -> None:
    """What RUN spent its time and memory on: run facts, step time, time by phase, top ops,
    GPU kernel types, peak memory, and the top findings ranked by estimated saving (from
    findings.json; the analyzers run first if the run was never analyzed)."""
    with load(run_dir) as run:
        summary = summarize(run, top=top)
        findings = read_findings(run) if n_findings else None
        if n_findings and findings is None:
            findings = analyze(run)
        # JSON only: the text report has time by phase, the breakdown's sum over steps
        breakdown = step_breakdown(run).to_json() if as_json else None
    if as_json:
        doc = summary.to_json()
        doc["step_breakdown"] = breakdown
        if findings is not None:
            doc["findings"] = findings.to_json()["findings"][:n_findings]
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2
                                      | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode())
        sys.stdout.write("\n")
        return
    console = make_console(highlight=False)
    render_full(summary, console)
    if findings is not None:
        render_findings(findings, console, top=n_findings, detail=min(n_findings, 2))
