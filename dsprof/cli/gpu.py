"""``dsprof gpu RUN``."""

from __future__ import annotations

import sys

import click
import orjson

from dsprof.render.gpu import render_gpu
from dsprof.render.safe_text import make_console
from dsprof.reports.gpu import gpu_report
from dsprof.run import load


@click.command("gpu")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.option("--top", default=10, show_default=True, help="How many modules to list.")
@click.option("--hta", "hta_rounding", is_flag=True,
              help="Idle split, launch stats and queues in HTA's microsecond view, to compare "
                   "with a HolisticTraceAnalysis report.")
def gpu_command(run_dir: str, as_json: bool, top: int, hta_rounding: bool) -> None:
    """The GPU side of RUN: kernels by category, Tensor Core share and misses, FLOP/s and MFU,
    GPU time by module and phase, idle time by cause, launch stats and queue lengths."""
    with load(run_dir) as run:
        report = gpu_report(run, top=top, hta_rounding=hta_rounding)
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2
                                      | orjson.OPT_SORT_KEYS).decode() + "\n")
        return
    render_gpu(report, make_console(highlight=False))
