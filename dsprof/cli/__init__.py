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


_ENTRY_POINT = False
"""True while ``main`` runs as the process's own command line (arguments from ``sys.argv``,
standalone): a test's ``main([...])`` or ``CliRunner`` is never ended by :func:`end_process`."""


def is_entry_point() -> bool:
    """Whether ``main`` runs as this process's command line (not a test's ``CliRunner``)."""
    return _ENTRY_POINT


def end_process(status: int = 0) -> None:
    """End the ``dsprof`` process now, as its normal exit would, less the interpreter's
    teardown: atexit handlers run and the streams are flushed, then ``os._exit``. Freeing
    every module and object of a process that loaded pyarrow, DuckDB and numpy cost
    ``dsprof import`` 40-70 ms of CPU (12 alternating runs on hta_v100_1rank, median 0.903 ->
    0.832 s). Returns without doing anything (the caller then returns as usual) unless this
    is the process's command line and no other non-daemon thread is alive; for commands whose
    work is all written and closed (``import``)."""
    import threading

    if not _ENTRY_POINT or any(t is not threading.main_thread() and not t.daemon
                               for t in threading.enumerate()):
        return
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - as at a normal exit, a closed stream is ignored
            status = status or 120  # what Python exits with when flushing stdout fails
    os._exit(status)


def collect_less() -> None:
    """For a command that allocates a great many short-lived objects and few cycles
    (``import``): the objects loaded so far (modules, classes, functions) are frozen, so the
    cyclic collector stops scanning them, and its youngest generation is collected every
    50,000 allocations instead of 700. The collector still runs, so cyclic garbage stays
    bounded. ~30 ms less CPU per ``dsprof import`` of hta_v100_1rank (10 alternating runs
    each, median 0.767 -> 0.736 s). Only as the process's command line (:func:`end_process`):
    a test's ``CliRunner`` keeps its own collector settings."""
    if not _ENTRY_POINT:
        return
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DsprofError as exc:
            raise _UserError(str(exc), exc.exit_code) from None
        except Exception as exc:
            from dsprof.sqlsafe import damaged_run

            if (damaged := damaged_run(exc)) is None:
                raise
            raise _UserError(str(damaged), damaged.exit_code) from None

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        global _ENTRY_POINT
        kwargs.setdefault("prog_name", "dsprof")
        _ENTRY_POINT = args is None and not rest and kwargs.get("standalone_mode", True)
        # `summary RUN` / `gpu RUN` that `dsprof import` rendered already, and is current:
        # printed before any command (rich, the renderers) is loaded (dsprof/reports/rendered.py,
        # imported only for those two: it loads orjson, which --help does without)
        argv = sys.argv[1:] if args is None else list(args)
        text = None
        if len(argv) == 2 and argv[0] in ("summary", "gpu") and not rest:
            from dsprof.reports.rendered import current_text

            text = current_text(argv)
        if text is None:
            from dsprof.cli.interrupted import ScriptInterrupted, raise_at_top

            try:
                return super().main(args, *rest, **kwargs)
            except ScriptInterrupted as stop:  # past click, which would make it "Aborted!"
                interrupt = stop.interrupt
            raise_at_top(interrupt)  # outside the except: no __context__ added to it
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader of a pipe has gone: as click's main does
            from click.utils import PacifyFlushWrapper

            sys.stdout = PacifyFlushWrapper(sys.stdout)
            sys.stderr = PacifyFlushWrapper(sys.stderr)
            sys.exit(1)
        if kwargs.get("standalone_mode", True):
            sys.exit(0)
        return None


# name -> (module, attribute, the start of its docstring, which ``dsprof --help`` lists). A
# command's module, and so pyarrow, DuckDB, rich or torch, is imported only when that command
# runs: ``--help`` and every command pay for what they use (tests/unit/test_cli_startup.py
# checks each line against the command's own docstring, so the two cannot drift apart).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "analyze": ("dsprof.cli.analyze", "analyze_command",
                "Run every analyzer on RUN, write RUN/findings.json and list"),
    "dashboard": ("dsprof.cli.dashboard", "dashboard_command",
                  "Browse RUN in a web dashboard (RUN_B too: the Compare page"),
    "diff": ("dsprof.cli.diff", "diff_command",
             "Compare RUN_B with RUN_A: step time, throughput, peak"),
    "export": ("dsprof.cli.export", "export_command",
               "Write RUN in a format other tools open: Perfetto UI or"),
    "gpu": ("dsprof.cli.gpu", "gpu_command",
            "The GPU side of RUN: kernels by category, Tensor Core share"),
    "import": ("dsprof.cli.import_cmd", "import_command",
               "Turn torch.profiler / Kineto traces (files, or a folder of"),
    "memory": ("dsprof.cli.memory", "memory_command",
               "Where memory went in RUN: the peak per device, what was live"),
    "run": ("dsprof.cli.run", "run_command",
            "Profile SCRIPT (or -m MODULE) with its own ARGS, unmodified."),
    "summary": ("dsprof.cli.summary", "summary_command",
                "What RUN spent its time and memory on: run facts, step time,"),
    "tune": ("dsprof.cli.tune", "tune_command",
             "Find a setting by prediction, then prove it with a run or two."),
    "verify": ("dsprof.cli.verify", "verify_command",
               "Rerun RUN's command with the fix of finding ID"),
}


# Commands whose process runs no user code and holds no pandas object, so pyarrow need not
# import pandas there (dsprof/without_pandas.py): they read and write runs; ``verify`` and
# ``tune`` start the script in child processes of their own. Not ``run`` (the script's process)
# nor ``dashboard`` (it plots with pandas).
WITHOUT_PANDAS = frozenset({"analyze", "diff", "export", "gpu", "import", "memory", "summary",
                            "tune", "verify"})


class _LazyGroup(_Group):
    """Imports a subcommand's module only when that command is looked up to run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return self.commands.get(cmd_name)
        import importlib

        module, attr, _help = COMMANDS[cmd_name]
        if _ENTRY_POINT and cmd_name in WITHOUT_PANDAS:
            from dsprof.without_pandas import keep_pandas_out

            keep_pandas_out()  # before the command's first Arrow array
        command: click.Command = getattr(importlib.import_module(module), attr)
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The listing uses the stored one-liners: loading every command to print its help
        # would import the whole of dsprof (and pyarrow, DuckDB, torch) for ``--help``.
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows = [(name, _listed(COMMANDS[name][2], limit) if name in COMMANDS
                 else self.commands[name].get_short_help_str(limit)) for name in names]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _listed(start: str, limit: int) -> str:
    """A stored docstring start as click would list it: "..." where the sentence goes on."""
    return click.utils.make_default_short_help(
        start if start.endswith(".") else start + "...", limit)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
