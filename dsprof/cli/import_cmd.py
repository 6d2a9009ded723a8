"""``dsprof import PATH... [-o DIR]``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dsprof.cli import collect_less, end_process
from dsprof.ingest.heap import prefer_system_allocator
from dsprof.ingest.importer import discover, import_traces
from dsprof.render.safe_text import esc, make_console
from dsprof.rundir import new_run_path
from dsprof.settings import Settings

PROGRESS_MIN_BYTES = 8 << 20


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Run directory to create (default: RUNS_DIR/<name>-<stamp>).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: on a terminal, for inputs over 8 MiB).")
@click.option("--analyze/--no-analyze", "analyze", default=True, show_default=True,
              help="Run the analyzers and store the summary and gpu reports now, so that "
                   "`dsprof summary` and `dsprof gpu` only read them.")
def import_command(paths: tuple[Path, ...], output: Path | None, progress: bool | None,
                   analyze: bool) -> None:
    """Turn torch.profiler / Kineto traces (files, or a folder of per-rank traces) into a run
    directory that every other dsprof command accepts."""
    # before pyarrow loads: Parquet's writers then return what they free (dsprof.ingest.heap)
    prefer_system_allocator()
    collect_less()
    settings = Settings.load(output=output)
    files = discover(list(paths))
    run_path = settings.output or new_run_path(settings.runs_dir, _name(paths[0]))
    total = sum(f.stat().st_size for f in files)
    if progress is None:
        progress = sys.stderr.isatty() and total >= PROGRESS_MIN_BYTES
    console = make_console(stderr=True, highlight=False)
    if progress:
        # imported only for a bar: rich.progress costs ~25 ms of start-up
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                      "{task.total} files"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("parsing traces", total=len(files))

            def tick(rank: int, path: Path) -> None:
                bar.update(task, advance=1, description=f"rank {rank}: {esc(path.name[:40])}")

            run, results = import_traces(list(paths), run_path, tick)
    else:
        run, results = import_traces(list(paths), run_path)
    if analyze and _precompute(run.path):
        _prerender(str(run.shown))
    events = sum(r.events for r in results)
    console.print(f"imported {events:,} events from {len(files)} file(s), "
                  f"{len(results)} rank(s) into {esc(run.shown)}")
    console.print(f"next: [bold]dsprof summary {esc(run.shown)}[/]", soft_wrap=True)
    click.echo(str(run.shown))
    end_process(0)  # everything is written and closed: no teardown of pyarrow, DuckDB, numpy


def _precompute(run_path: Path) -> bool:
    """Findings and the default summary/gpu reports, computed here where the tables are fresh
    (dsprof/reports/precompute.py): the commands typed next then only read files. Returns
    whether they were stored."""
    from dsprof.log import logger
    from dsprof.reports.precompute import precompute
    from dsprof.run import load

    try:
        with load(run_path) as run:
            precompute(run)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - the import succeeded; the analysis is a bonus
        # the run is whole without it: summary and gpu compute what is missing when asked
        logger.warning("the run is imported, but analyzing it failed (%s: %s); "
                       "`dsprof analyze %s` runs the analyzers again",
                       type(exc).__name__, exc, run_path)
        return False
    return True


def _prerender(run_arg: str) -> None:
    """``dsprof summary RUN`` and ``dsprof gpu RUN`` rendered now, as those commands would
    print them on this stdout (dsprof/reports/rendered.py): typed next, in the same terminal
    or into the same kind of pipe, they print the text without loading their renderers."""
    from dsprof.cli import gpu, summary
    from dsprof.log import logger
    from dsprof.reports import rendered

    for command, render in (("summary", summary.render_stored), ("gpu", gpu.render_stored)):
        key = rendered.key(command, run_arg)
        if key is None:
            return
        console = make_console(highlight=False)
        try:
            with console.capture() as capture:
                done = render(run_arg, console)
        except Exception as exc:  # noqa: BLE001 - the command renders it when typed
            logger.debug("%s of %s not pre-rendered (%s: %s)", command, run_arg,
                         type(exc).__name__, exc)
            continue
        if done:
            rendered.save(run_arg, command, capture.get(), key)


def _name(path: Path) -> str:
    name = path.name or path.resolve().name
    for suffix in (".gz", ".json", ".pt", ".trace"):
        name = name.removesuffix(suffix)
    return name or "import"
