"""``dsprof export RUN --format perfetto|chrome|tensorboard``."""

from __future__ import annotations

from pathlib import Path

import click

from dsprof.run import load


@click.command("export")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=str))
@click.option("-f", "--format", "fmt", required=True,
              type=click.Choice(["perfetto", "chrome", "tensorboard"]),
              help="perfetto / chrome: one trace of every rank with the findings marked "
                   "(perfetto: gzip-compressed); tensorboard: per-step scalars.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="File (trace) or folder (tensorboard) to write [default: inside RUN].")
def export_command(run_dir: str, fmt: str, output: Path | None) -> None:
    """Write RUN in a format other tools open: Perfetto UI or chrome://tracing, TensorBoard."""
    with load(run_dir) as run:
        if fmt == "tensorboard":
            from dsprof.export.tensorboard import write_tensorboard

            path, points = write_tensorboard(run, output)
            click.echo(f"wrote {points} scalar points to {path}; view with: "
                       f"tensorboard --logdir {path}", err=True)
        else:
            from dsprof.export.chrome import write_trace

            path, events = write_trace(run, fmt, output)
            where = "ui.perfetto.dev" if fmt == "perfetto" else "chrome://tracing or ui.perfetto.dev"
            click.echo(f"wrote {events} events to {path}; open it in {where}", err=True)
