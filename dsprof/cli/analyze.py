"""``dsprof analyze RUN``: (re)run the analyzers and write findings.json."""

from __future__ import annotations

import sys

import click
import orjson

from dsprof.analyzers.registry import analyze
from dsprof.render.findings import render_findings
from dsprof.render.safe_text import make_console
from dsprof.run import load


@click.command("analyze")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=str))
@click.option("--only", multiple=True, metavar="NAME",
              help="Show only the findings of this analyzer, or whose id starts with NAME "
                   "(e.g. fusion, fusion-4a7b); repeatable. findings.json keeps every finding.")
@click.option("--top", default=10, show_default=True, help="How many findings to list.")
@click.option("--detail", default=3, show_default=True,
              help="How many of them to explain with their fix.")
@click.option("--json", "as_json", is_flag=True, help="Print findings.json instead.")
def analyze_command(run_dir: str, only: tuple[str, ...], top: int, detail: int,
                    as_json: bool) -> None:
    """Run every analyzer on RUN, write RUN/findings.json and list the findings ranked by
    estimated saving, each with its evidence, the fix to paste and how to verify it."""
    from dsprof.analyzers.registry import ANALYZERS, load_analyzer
    from dsprof.analyzers.selection import select

    with load(run_dir) as run:
        run.hold_tables_in_memory()  # the analyzers run ~50 queries: read the Parquet once
        # every analyzer runs, so findings.json is always the full list; --only filters what
        # is shown (a finding's id prefix is its kind, which one analyzer may not own alone)
        result = analyze(run)
    if only:
        result = select(result, only, {load_analyzer(e).name for e in ANALYZERS})
    if as_json:
        sys.stdout.write(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    render_findings(result, make_console(highlight=False), top=top, detail=detail)
