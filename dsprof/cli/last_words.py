"""What ``dsprof run`` prints about its run (the summary, or where the raw data is), written
after what the script prints on its way out.

Plain python's last output is the script's: threads it left running (the interpreter waits
for them), then its atexit handlers. dsprof printed its summary when the script's code
returned, before those: a script that ended a progress line from an atexit handler had
dsprof's summary glued to the unfinished line and its own words after the summary. The text
is rendered when the run has been analysed, as the terminal it goes to shows it (width,
colour), and written at exit after the script's atexit handlers and the release of its
globals (:func:`dsprof.launch.at_the_end`). Where dsprof is called from Python (a test's
``CliRunner``: no interpreter exit follows) or serves a dashboard next, it is written at
once. Not reached: a finalizer that runs at the interpreter's module teardown, after every
atexit handler (a tqdm bar never closed draws its last state there), still prints after
dsprof's summary, and the summary starts on that bar's line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dsprof import launch
from dsprof.render.safe_text import make_console


def console_on(stream: Any) -> Any:
    """A console on ``stream``, or None when the script closed it (sys.stderr.close() at its
    end: writing there raised, and the exit status became 1 instead of the script's)."""
    if stream is None or getattr(stream, "closed", False):
        return None
    return make_console(file=stream, highlight=False)


def say(terminal: Any, render: Callable[[Any], None], last: bool) -> None:
    """``render(console)`` onto ``terminal``: now, or, when ``last``, rendered now and written
    after the script's own exit output."""
    console = console_on(terminal)
    if console is None:
        return
    if not last:
        render(console)
        _flush(terminal)
        return
    with console.capture() as captured:
        render(console)
    text = captured.get()
    launch.at_the_end(lambda: _write(terminal, text))


def _write(terminal: Any, text: str) -> None:
    if getattr(terminal, "closed", False):  # closed by the script on its way out
        return
    try:
        terminal.write(text)
    except (AttributeError, OSError, ValueError):
        return
    _flush(terminal)


def _flush(terminal: Any) -> None:
    try:
        terminal.flush()
    except (AttributeError, OSError, ValueError):  # closed by the script: nothing to flush
        pass
