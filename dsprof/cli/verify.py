"""``dsprof verify RUN ID[,ID]``: apply findings for real and measure them."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from dsprof.apply.plan import parse_ids
from dsprof.apply.verify import Verification, verify
from dsprof.render.safe_text import esc, make_console
from dsprof.units import fmt_mib, fmt_s_as_ms


@click.command("verify")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("ids")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Run directory for the rerun [default: next to RUN, <RUN>-verify-<stamp>].")
@click.option("--fresh-baseline", is_flag=True, default=False,
              help="Also rerun RUN's command without the fix and measure the baseline there "
                   "(for busy or shared machines, where RUN's speed may not be today's).")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Run baseline and fix alternately this many times and pool their steps "
                   "(implies --fresh-baseline).")
@click.option("-v", "--verbose", is_flag=True, default=False,
              help="Show the rerun's own output and dsprof's summary of it.")
def verify_command(run: Path, ids: str, output: Path | None, fresh_baseline: bool,
                   rounds: int, verbose: bool) -> None:
    """Rerun RUN's command with the fix of finding ID (comma-separated for several) applied
    (`dsprof run --apply ID --baseline RUN ...`), then print predicted vs measured step time
    and peak memory.

    Step times are medians over full-speed steps only: step 0 and 1 (setup, compiling) and
    the profiler's window steps are left out of both runs.
    """
    result = verify(run, parse_ids(ids), output, quiet=not verbose,
                    fresh_baseline=fresh_baseline, rounds=rounds)
    render(result, make_console(highlight=False))


_ms = fmt_s_as_ms
_mib = fmt_mib


def render(v: Verification, console: Console) -> None:
    for f in v.findings:
        console.print(f"[bold]{esc(f['id'])}[/] {esc(f['title'])}  (apply: "
                      + " ".join(f"{esc(k)}={esc(val)}" for k, val in f["apply"].items()) + ")",
                      soft_wrap=True)
    table = Table(box=None, pad_edge=False)
    for col in ("", "baseline", "predicted", "measured"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("step time", _ms(v.baseline_step_s), _ms(v.predicted_step_s),
                  _ms(v.measured_step_s))
    table.add_row("spread (robust sd)", _ms(v.baseline_spread_s), "",
                  _ms(v.measured_spread_s))
    table.add_row("peak memory", _mib(v.baseline_peak), _mib(v.predicted_peak),
                  _mib(v.measured_peak))
    console.print(table)
    if v.measurable is False:
        console.print(f"[bold yellow]no measurable change[/]: the medians differ by "
                      f"{abs(v.baseline_step_s - v.measured_step_s) * 1e3:.2f} ms, inside "  # type: ignore[operator]
                      f"the {v.band_s * 1e3:.2f} ms the two arms' spread allows; more steps "  # type: ignore[operator]
                      "or --rounds N narrow it", soft_wrap=True)
    if v.baseline_step_s and v.measured_step_s:
        speedup = v.baseline_step_s / v.measured_step_s
        err = v.error
        err_txt = "" if err is None else f"; measured change vs predicted: {err:+.0%}"
        console.print(f"speedup x{speedup:.2f}{err_txt} (medians of {v.steps_used[0]} and "
                      f"{v.steps_used[1]} full-speed steps; compile and profiled steps left out)")
    console.print(f"rerun: {esc(v.applied)}", soft_wrap=True)
    console.print("[dim]medians on a busy machine move with its load: --rounds N alternates "
                  "fresh baseline and fixed runs[/]", soft_wrap=True)
