"""A script that Ctrl-C ended (an unhandled ``KeyboardInterrupt``) ends dsprof's process as it
would have ended the plain interpreter's.

Plain ``python script.py`` (and ``python -m``) marks an exception of exactly that type leaving
the script's top level, and after finalisation kills itself with SIGINT: a parent sees -2, a
shell 130 and a shell loop around it stops. Finalisation can undo the mark: source text
compiled and run then (``exec``/``eval`` of a string, which every dataclass and namedtuple
defined then does) clears it. torch._dynamo's atexit handler ``dump_compile_times`` does (gdb:
its first ``import tabulate`` defines namedtuples), so a script that imported torch._dynamo (a
torch optimizer does) exits 1 (measured, torch 2.13, CPython 3.11: -2 without it). dsprof
exited 130 either way, as an ordinary exit. So no status is written down here: once the run is
saved, the script's own exception is raised again at dsprof's entry point, and the
interpreter's finalisation decides, as it does for the plain script. dsprof's own profiler
must not load torch._dynamo where the script does not (it did, and exited 1 where plain
python gave -2): :mod:`dsprof.collectors.inductor_untouched`.

The traceback was printed when the script ended (:func:`dsprof.launch.run`, without dsprof's
frames, through the script's ``sys.excepthook``); the interpreter's top level must not print
it again with dsprof's frames, so a one-shot hook takes that call.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import click

    from dsprof.launch import Outcome


def end_as_the_script(ctx: click.Context, outcome: Outcome) -> NoReturn:
    """``dsprof run``'s exit, the run saved: the script's status, or, where Ctrl-C ended the
    script, its KeyboardInterrupt handed to dsprof's entry point (``main``), which raises it
    to the interpreter. Called from Python (a test's ``CliRunner``), dsprof exits 130 then."""
    from dsprof import cli

    if outcome.interrupt is not None and cli.is_entry_point():
        raise ScriptInterrupted(outcome.interrupt)
    ctx.exit(outcome.exit_status)


class ScriptInterrupted(BaseException):
    """The script's ``KeyboardInterrupt`` on its way from ``dsprof run`` to dsprof's entry
    point. A BaseException of its own: click's standalone mode turns a KeyboardInterrupt into
    "Aborted!" and exit 1, and lets any other BaseException through."""

    def __init__(self, interrupt: BaseException):
        super().__init__()
        self.interrupt = interrupt


def raise_at_top(interrupt: BaseException) -> NoReturn:
    """Raise the script's ``interrupt`` out of dsprof's entry point, to the interpreter's top
    level. Called outside any ``except`` block: raising there would set the handled exception
    as the interrupt's ``__context__``."""
    shown = interrupt.__traceback__  # the script's frames only, as printed
    own_hook = sys.excepthook  # the script's, if it set one

    def printed_already(exc_type: type[BaseException], value: BaseException,
                        tb: TracebackType | None) -> None:
        sys.excepthook = own_hook  # back before the atexit handlers (the script's too) run
        if value is not interrupt:  # not ours (a caller of main() caught it): its own hook
            own_hook(exc_type, value, tb)
            return
        # sys.last_traceback as plain python leaves it: the script's frames, no dsprof's
        value.__traceback__ = shown
        sys.last_traceback = shown

    sys.excepthook = printed_already
    raise interrupt
