"""The ``dsprof`` logger, driven by ``DS_LOG_LEVEL``.

Levels are the standard ones (DEBUG, INFO, WARNING, ERROR; lower case and numbers accepted).
A bad value is reported once and INFO is used. Messages go to stderr and, once a run directory
exists, to its ``dsprof.log`` as well.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from dsprof import hidden_threads

LOGGER_NAME = "dsprof"
_NAMES = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
          "WARN": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
_FORMAT = "[dsprof %(levelname)s] %(message)s"
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"



class _OwnLogger(logging.Logger):
    """dsprof's logger, which a script's logging configuration does not turn off:
    ``logging.config.dictConfig``/``fileConfig`` disable every logger that exists and that
    the configuration does not name (``disable_existing_loggers``, on by default), which is
    meant for the script's libraries; it took dsprof's whole log (its ``dsprof.log`` kept 1
    line of 55, and the terminal lost "a new loop starts at step 20" and any later warning).
    dsprof's logger never propagates to the script's handlers, so its lines change nothing
    the script configured."""

    @property  # type: ignore[override]
    def disabled(self) -> bool:
        return False

    @disabled.setter
    def disabled(self, value: bool) -> None:
        pass

    def makeRecord(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        """On one of dsprof's hidden threads (the sampler's, the SIGTERM watcher's) a record
        that does not make the thread known to ``threading`` (:mod:`dsprof.hidden_threads`)."""
        if hidden_threads.own_thread_name() is not None:
            return hidden_threads.make_record(*args, **kwargs)
        return super().makeRecord(*args, **kwargs)


logger = logging.getLogger(LOGGER_NAME)
logger.__class__ = _OwnLogger


class _CleanFormatter(logging.Formatter):
    """Log lines quote op and module names and paths from traces: their control characters
    are written out visibly (``\\x1b``), so a log line never drives the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        from dsprof.render.safe_text import clean

        return clean(super().format(record))


# the log line of a session that could not start (its script runs on unprofiled): the merge of
# a multi-rank run reads it back from the rank's dsprof.log (dsprof/ranks.py)
SESSION_NOT_STARTED = "the dsprof session did not start"

STEP_LINE = {"dsprof_step_line": True}
"""``extra=`` of the one-line-per-step records: kept in the run's dsprof.log, shown on the
terminal only at DEBUG or with DSPROF_STEP_LINES=1 (docs/decisions.md, "Progress")."""


FILE_LINE = STEP_LINE
"""``extra=`` of a line about dsprof's own bookkeeping that asks nothing of the user (what the
step detection is still waiting for): kept in dsprof.log like a step line, off the terminal
the script writes to."""


class _StepLinesToFileOnly(logging.Filter):
    """Per-step lines stay out of the terminal the profiled script writes to: a line every
    step floods a long run and breaks the script's own tqdm / Lightning progress bars."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "dsprof_step_line", False):
            return True
        return logger.level <= logging.DEBUG or os.environ.get("DSPROF_STEP_LINES") == "1"


def parse_level(text: str | None) -> tuple[int, str | None]:
    """Return (level, complaint); complaint is None when ``text`` was valid or absent."""
    if text is None or not text.strip():
        return logging.INFO, None
    value = text.strip()
    if value.upper() in _NAMES:
        return _NAMES[value.upper()], None
    if value.lstrip("-").isdigit():
        return int(value), None
    return logging.INFO, (f"DS_LOG_LEVEL={text!r} is not a level (DEBUG, INFO, WARNING, ERROR); "
                          "using INFO")


def configure(quiet: bool = False) -> int:
    """Set the logger up from the environment (idempotent). Returns the level in force."""
    level, complaint = parse_level(os.environ.get("DS_LOG_LEVEL"))
    logger.setLevel(level)
    logger.propagate = False
    stderr = _handler("stderr")
    if stderr is None:
        stderr = _TerminalHandler(StreamAsFound(sys.stderr))
        stderr.set_name("stderr")
        stderr.setFormatter(_CleanFormatter(_FORMAT))
        stderr.addFilter(_StepLinesToFileOnly())
        logger.addHandler(stderr)
    else:
        stderr.setStream(StreamAsFound(sys.stderr))  # type: ignore[arg-type]
    stderr.setLevel(max(level, logging.WARNING) if quiet else level)
    if complaint and not getattr(configure, "_complained", False):
        configure._complained = True  # type: ignore[attr-defined]
        logger.warning(complaint)
    return level


class StreamAsFound:
    """``stream`` written through its class's own ``write`` and ``flush``: a library the script
    uses may replace them on the very object (wandb's console capture sets
    ``sys.stderr.write`` to copy everything into the run's ``output.log``, and a script that
    never called ``wandb.finish()`` or crashed got dsprof's closing lines there). dsprof's
    lines reach the terminal, never what the script's libraries capture."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._type = type(stream)

    def write(self, text: str) -> Any:
        write = getattr(self._type, "write", None)
        return write(self._stream, text) if callable(write) else self._stream.write(text)

    def flush(self) -> None:
        flush = getattr(self._type, "flush", None)
        if callable(flush):
            flush(self._stream)
        else:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, closed
        return getattr(self._stream, name)


class _TerminalHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr as dsprof found it. A script may close it (``sys.stderr.close()`` at its end):
    then dsprof's later lines have nowhere to go, and logging's error report, written to that
    same closed stream, would raise out of the logging call into dsprof's exit."""

    def handleError(self, record: logging.LogRecord) -> None:
        if _the_scripts(sys.exc_info()[1]):
            raise  # noqa: PLE0704 - inside logging's `except`: the script's handler raised it
        if getattr(self.stream, "closed", False):
            return
        super().handleError(record)


class _RunLogHandler(logging.FileHandler):
    """The run's dsprof.log. A write that fails (a full disk, a file size limit) turns it off
    with one line on stderr, instead of logging's traceback for every later message."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if _the_scripts(exc):
            raise  # noqa: PLE0704 - inside logging's `except`: the script's handler raised it
        logger.removeHandler(self)
        why = getattr(exc, "strerror", None) or exc
        sys.stderr.write(f"[dsprof ERROR] could not write {self.baseFilename}: {why}; the log "
                         "goes to the terminal only from here\n")


def _the_scripts(exc: BaseException | None) -> bool:
    """An error a log write met that the script's own signal handler raised (logging catches
    every error of a write and hands it to ``handleError``): the script's, not the log's."""
    from dsprof.frames import raised_in_signal_handler

    return exc is not None and raised_in_signal_handler(exc)


def attach_file(path: Path) -> None:
    """Also write the log to ``path`` (the run's dsprof.log)."""
    detach_file()
    handler = _RunLogHandler(path, encoding="utf-8")
    handler.set_name("file")
    handler.setFormatter(_CleanFormatter(_FILE_FORMAT))
    handler.setLevel(logger.level)
    logger.addHandler(handler)


def detach_file() -> None:
    handler = _handler("file")
    if handler is not None:
        logger.removeHandler(handler)
        handler.close()


def forget_file_in_child() -> None:
    """In a forked child: stop logging into the parent's run without flushing or closing the
    parent's file (the child must write nothing into the run).

    The child's copy of the file object is then closed at its descriptor, below its buffers:
    dropped open, it was collected at once and warned ``ResourceWarning: unclosed file
    <... dsprof.log ...>`` in every DataLoader worker of a script run with ``-X dev``,
    ``-W default`` or its own ``warnings.simplefilter("error")`` (an "Exception ignored in"
    block), where plain python's workers print nothing. Closing the raw file flushes nothing
    (it has no buffer; what the copied buffers hold is the parent's to write) and closes only
    the child's descriptor, not the parent's file; the buffers above it then count as closed
    and are collected silently."""
    handler = _handler("file")
    if handler is not None:
        logger.removeHandler(handler)
        raw = getattr(getattr(getattr(handler, "stream", None), "buffer", None), "raw", None)
        if raw is not None:
            raw.close()


def _handler(name: str) -> logging.Handler | None:
    for h in logger.handlers:
        if h.get_name() == name:
            return h
    return None
