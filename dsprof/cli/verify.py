"""``dsprof verify RUN ID[,ID]``: apply findings for real and measure them."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.console import Console

from dsprof.apply.plan import parse_ids
from dsprof.apply.verify import Verification, environment_said, verify
from dsprof.render.progress import CommandProgress
from dsprof.render.safe_text import make_console
from dsprof.render.verification import render_verification


@click.command("verify")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("ids")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Run directory for the rerun [default: next to RUN, <RUN>-verify-<stamp>].")
@click.option("--fresh-baseline", is_flag=True, default=False,
              help="Also rerun RUN's command without the fix and measure the baseline there "
                   "(for busy or shared machines, where RUN's speed may not be today's).")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Run baseline and fix alternately this many times (implies "
                   "--fresh-baseline); from 2, the change gets a 95 % interval over the "
                   "rounds and a verdict.")
@click.option("-v", "--verbose", is_flag=True, default=False,
              help="Show the rerun's own output and dsprof's summary of it.")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the comparison as JSON (the paired verdict under \"paired\").")
def verify_command(run: Path, ids: str, output: Path | None, fresh_baseline: bool,
                   rounds: int, verbose: bool, as_json: bool) -> None:
    """Rerun RUN's command with the fix of finding ID (comma-separated for several) applied
    (`dsprof run --apply ID --baseline RUN ...`), then print predicted vs measured step time
    and peak memory.

    Step times are medians over full-speed steps only: step 0 and 1 (setup, compiling) and
    the profiler's window steps are left out of both runs. With --rounds N (N >= 2) each
    round's change is baseline k's median step - fix k's; the verdict is on their mean and
    its 95 % interval.
    """
    said = environment_said(run)
    if said is not None:  # on stderr: stdout is the result (--json)
        click.echo(f"dsprof verify: the reruns' environment {said}", err=True)
    # the reruns' own output is shown with -v: then no status line to interleave with it
    with CommandProgress("verify", live=None if not verbose else False) as progress:
        result = verify(run, parse_ids(ids), output, quiet=not verbose,
                        fresh_baseline=fresh_baseline, rounds=rounds, progress=progress.stage)
    if as_json:
        click.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
        return
    render(result, make_console(highlight=False))


def render(v: Verification, console: Console) -> None:
    render_verification(v, console)
