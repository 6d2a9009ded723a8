"""The ``dsprof`` command. Commands parse arguments and call library code; only this entry
point turns a :class:`DsprofError` into one line on stderr and its exit status."""

from __future__ import annotations

import sys
from typing import Any

import click

from dsprof._version import __version__
from dsprof.errors import DsprofError


class _UserError(click.ClickException):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        # The message may quote a file name or trace text: no control character reaches
        # the terminal.
        from dsprof.render.safe_text import clean

        click.echo(f"dsprof: error: {clean(self.format_message())}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DsprofError as exc:
            raise _UserError(str(exc), exc.exit_code) from None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("prog_name", "dsprof")
        return super().main(*args, **kwargs)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dsprof")
def main() -> None:
    """dsprof: profile PyTorch training and say what to change.

    \b
      dsprof run train.py --lr 3e-4     profile an unmodified script
      dsprof summary RUN                what the run spent its time and memory on
      dsprof analyze RUN                findings: what to change and what it saves
      dsprof diff RUN_A RUN_B           what changed between two runs
      dsprof import TRACE_OR_DIR        turn torch.profiler traces into a run
      dsprof export RUN -f perfetto     open a run in Perfetto, chrome://tracing, TensorBoard
      dsprof dashboard RUN [RUN_B]      browse a run (or compare two) in a web dashboard
    """


def _register() -> None:
    from dsprof.cli.analyze import analyze_command
    from dsprof.cli.dashboard import dashboard_command
    from dsprof.cli.diff import diff_command
    from dsprof.cli.export import export_command
    from dsprof.cli.gpu import gpu_command
    from dsprof.cli.import_cmd import import_command
    from dsprof.cli.memory import memory_command
    from dsprof.cli.run import run_command
    from dsprof.cli.summary import summary_command
    from dsprof.cli.tune import tune_command
    from dsprof.cli.verify import verify_command

    main.add_command(run_command)
    main.add_command(summary_command)
    main.add_command(import_command)
    main.add_command(analyze_command)
    main.add_command(diff_command)
    main.add_command(gpu_command)
    main.add_command(memory_command)
    main.add_command(export_command)
    main.add_command(verify_command)
    main.add_command(tune_command)
    main.add_command(dashboard_command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
