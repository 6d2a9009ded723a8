"""``dsprof memory RUN``."""

from __future__ import annotations

from pathlib import Path

import click

from dsprof.render.memory import render_report
from dsprof.render.safe_text import make_console
from dsprof.reports.memory import memory_report
from dsprof.run import load


@click.command("memory")
@click.argument("run_path", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rows per table.")
def memory_command(run_path: Path, top: int) -> None:
    """Where memory went in RUN: the peak per device, what was live then by category, module
    and allocation site, what each module saves for backward, and the allocator's state."""
    with load(run_path) as run:
        report = memory_report(run, top=top)
    render_report(report, make_console(highlight=False), top=top)
