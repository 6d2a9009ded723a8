"""``dsprof gpu RUN``.

On a run whose report is stored and current for these options (``dsprof import`` stores the
default one: :mod:`dsprof.reports.stored`), the command renders that file without opening the
tables, so it imports neither pyarrow, DuckDB nor numpy.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click
import orjson

from dsprof.render.gpu import render_gpu
from dsprof.render.safe_text import make_console
from dsprof.reports import stored
from dsprof.reports.gpu_data import GpuReport


@click.command("gpu")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.option("--top", default=stored.GPU_TOP, show_default=True, help="How many modules to list.")
@click.option("--hta", "hta_rounding", is_flag=True,
              help="Idle split, launch stats and queues in HTA's microsecond view, to compare "
                   "with a HolisticTraceAnalysis report.")
def gpu_command(run_dir: str, as_json: bool, top: int, hta_rounding: bool) -> None:
    """The GPU side of RUN: kernels by category, Tensor Core share and misses, FLOP/s and MFU,
    GPU time by module and phase, idle time by cause, launch stats and queue lengths."""
    from_store = _stored(run_dir, top, hta_rounding)
    report = from_store or _computed(run_dir, top, hta_rounding)
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2
                                      | orjson.OPT_SORT_KEYS).decode() + "\n")
        return
    _render(run_dir, report, make_console(highlight=False), from_store is not None)


def _render(run_dir: str, report: GpuReport, console: Any, from_store: bool) -> None:
    with stored.rendering(run_dir, "gpu") if from_store else contextlib.nullcontext():
        render_gpu(report, console)


def render_stored(run_dir: str, console: Any) -> bool:
    """Render ``dsprof gpu RUN_DIR`` (default options) from the stored report into
    ``console``, as the command would; False when it is not stored."""
    report = _stored(run_dir, stored.GPU_TOP, False)
    if report is None:
        return False
    _render(run_dir, report, console, True)
    return True


def _stored(run_dir: str, top: int, hta_rounding: bool) -> GpuReport | None:
    if not stored.finished_and_ingested(run_dir):
        return None
    doc = stored.load_report(run_dir, "gpu", stored.gpu_params(top, hta_rounding))
    if doc is None:
        return None
    try:
        return GpuReport.from_json(doc)
    except (KeyError, TypeError, ValueError):
        return None  # not what this version stores: compute it again


def _computed(run_dir: str, top: int, hta_rounding: bool) -> GpuReport:
    from dsprof.reports.gpu import gpu_report
    from dsprof.run import load

    with load(run_dir) as run:
        report = gpu_report(run, top=top, hta_rounding=hta_rounding)
        stored.save_report(run.path, "gpu", stored.gpu_params(top, hta_rounding), report.to_json())
    return report
