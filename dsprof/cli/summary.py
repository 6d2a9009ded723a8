"""``dsprof summary RUN``."""

from __future__ import annotations

import sys

import click
import orjson
from rich.console import Console

from dsprof.analyzers.breakdown import summarize
from dsprof.render.summary import render_full
from dsprof.run import load


@click.command("summary")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the same facts as one JSON document.")
@click.option("--top", default=15, show_default=True, help="How many ops to list.")
def summary_command(run_dir: str, as_json: bool, top: int) -> None:
    """What RUN spent its time and memory on: run facts, step time, time by phase, top ops,
    GPU kernel types and peak memory."""
    with load(run_dir) as run:
        summary = summarize(run, top=top)
    if as_json:
        sys.stdout.write(orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2
                                      | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode())
        sys.stdout.write("\n")
        return
    render_full(summary, Console(highlight=False))
