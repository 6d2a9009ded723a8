"""``dsprof tune batch-size [OPTIONS] SCRIPT [ARGS]...``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import orjson
from rich.table import Table

from dsprof.render.safe_text import esc, make_console
from dsprof.render.summary import fmt_bytes
from dsprof.settings import parse_bytes

_CONTEXT = {"allow_interspersed_args": False, "ignore_unknown_options": True}


@click.group("tune")
def tune_command() -> None:
    """Find a setting by prediction, then prove it with a run or two."""


@tune_command.command("batch-size", context_settings=_CONTEXT)
@click.option("--baseline", type=click.Path(path_type=Path, exists=True), default=None,
              help="A finished run of the script to predict from (default: run it first).")
@click.option("--memory-budget", "budget", default=None, metavar="BYTES",
              help="Live bytes the batch may fill (512MiB, 2GB) [CPU: required; GPU: the "
                   "device's memory less 8 %].")
@click.option("--probes", type=click.IntRange(1, 2), default=2, show_default=True,
              help="Probe runs at most (the second only when the first misses the budget).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder for the runs [default: dsprof-runs/tune-<stamp>].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("target", nargs=-1, type=click.UNPROCESSED)
def batch_size_command(baseline: Path | None, budget: str | None, probes: int,
                       output: Path | None, as_json: bool, target: tuple[str, ...]) -> None:
    """Predict the largest batch SCRIPT's DataLoader can use within the memory budget, run it
    at that batch (DS_BATCH_SIZE, no code change) and print predicted vs measured peak and
    samples/s."""
    from dsprof.tuning import tune_batch_size

    if not target:
        raise click.UsageError("give the SCRIPT to tune and its ARGS")
    try:
        budget_bytes = parse_bytes(budget) if budget else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--memory-budget") from None
    out = output or Path("dsprof-runs") / f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    console = make_console(stderr=True, highlight=False)
    result = tune_batch_size(list(target), out, baseline, budget_bytes, max_probes=probes,
                             echo=lambda text: console.print(f"dsprof: {esc(text)}",
                                                             soft_wrap=True))
    if as_json:
        sys.stdout.write(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    table = Table(title=f"batch size within {fmt_bytes(result.budget)}")
    for col in ("run", "batch", "predicted peak", "measured peak", "error",
                "predicted samples/s", "measured samples/s"):
        table.add_column(col, justify="left" if col == "run" else "right")
    b = result.baseline
    table.add_row("baseline", str(b.batch), "", fmt_bytes(b.peak), "", "",
                  _num(b.samples_s))
    for k, p in enumerate(result.probes, 1):
        m = p.measured
        err = f"{m.peak / p.predicted_peak - 1:+.1%}" if m.peak and p.predicted_peak else ""
        status = "" if m.exit_status == 0 else f" (exit {m.exit_status})"
        table.add_row(f"probe {k}{status}", str(p.batch), fmt_bytes(p.predicted_peak),
                      fmt_bytes(m.peak), err, _num(p.predicted_samples_s), _num(m.samples_s))
    make_console(highlight=False).print(table)
    best = result.advised
    if best is None:
        console.print("dsprof: no probe fitted the budget; keep the batch at "
                      f"{b.batch}", soft_wrap=True)
    else:
        console.print(f"dsprof: use batch_size={best.batch} (runs in {esc(out)})", soft_wrap=True)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:,.1f}"
