"""``dsprof diff RUN_A RUN_B``."""

from __future__ import annotations

import sys

import click
import orjson

from dsprof.render.diff import render_diff
from dsprof.render.safe_text import make_console
from dsprof.reports.diff import diff
from dsprof.run import load


@click.command("diff")
@click.argument("run_a", metavar="RUN_A", type=click.Path(path_type=str))
@click.argument("run_b", metavar="RUN_B", type=click.Path(path_type=str))
@click.option("--top", default=10, show_default=True, help="How many op/module changes to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def diff_command(run_a: str, run_b: str, top: int, as_json: bool) -> None:
    """Compare RUN_B with RUN_A: step time, throughput, peak memory, the ops and modules that
    changed most, findings resolved and new, and for a run made with `dsprof run --apply`,
    each applied finding's predicted saving beside the measured one."""
    with load(run_a) as a, load(run_b) as b:
        result = diff(a, b, top=top)
    if as_json:
        sys.stdout.write(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    render_diff(result, make_console(highlight=False))
