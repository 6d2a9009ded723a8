"""``dsprof summary RUN`` and ``dsprof gpu RUN`` as text, rendered once by ``dsprof import``.

A stored report (:mod:`dsprof.reports.stored`) spares those commands the tables, but each still
imported rich and dsprof's renderers and rendered it: ~0.1 s of a command's ~0.11 s. ``dsprof
import`` renders both, with the default options, into what they print
(``RUN/reports/<command>.rendered.json``), and the command line prints that text when it is
current, before loading any command (``dsprof.cli._Group.main``): the command then costs the
interpreter and click.

The text is current while everything it was rendered from is as it was: the run's files (the
stored report's key: ``meta.json`` and ``tables/``), ``findings.json`` and the stored report
itself, the dsprof version and the source files of its renderers, the installed rich, the
command and its RUN argument as typed (the summary shows it), and what rich decides its output
from. Rich reads those from the environment and the standard streams (``rich/console.py``:
``COLUMNS``, ``FORCE_COLOR``, ``TTY_COMPATIBLE``, ``NO_COLOR``, ``TERM``, ``COLORTERM``...,
whether stdout is a terminal, the terminal's size and stdout's encoding); :func:`conditions`
reads the same, without importing rich. A text rendered in a terminal of one size is not
printed in one of another size, nor into a pipe: the command renders as before.

This module imports only the standard library, orjson and :mod:`dsprof.reports.stored`.
"""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import orjson

from dsprof._version import __version__
from dsprof.reports import stored

RENDERED_FORMAT = 1
COMMANDS = ("summary", "gpu")
# what rich's Console reads from the environment (rich 15, console.py)
_RICH_ENV = ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
             "TERM", "COLORTERM", "JUPYTER_COLUMNS", "JUPYTER_LINES")
# dsprof's code that turns a stored report into text, besides dsprof/render/
_RENDER_CODE = ("cli/summary.py", "cli/gpu.py", "reports/summary_data.py", "reports/gpu_data.py",
                "reports/stored.py", "findings_file.py", "findings.py")
_PACKAGE = Path(__file__).resolve().parent.parent


def rendered_path(run_path: str | os.PathLike[str], command: str) -> Path:
    return Path(run_path) / stored.REPORTS_DIR / f"{command}.rendered.json"


def conditions() -> dict[str, Any] | None:
    """What rich decides the command's output from (width, colours, terminal or not,
    encoding), or None where it reads more than this (Windows' legacy console)."""
    if sys.platform == "win32":
        return None
    size = None
    for fd in (0, 1, 2):  # rich asks the standard streams in this order
        try:
            size = list(os.get_terminal_size(fd))
            break
        except (AttributeError, ValueError, OSError):
            continue
    out = sys.stdout
    try:
        tty = bool(out.isatty())
    except (AttributeError, ValueError):
        tty = False
    return {"env": {k: os.environ.get(k) for k in _RICH_ENV}, "size": size, "tty": tty,
            "encoding": getattr(out, "encoding", None)}


def _stat(path: Path) -> list[Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _code() -> list[Any]:
    """The renderers' source files and rich's, by size and mtime: an edited renderer or an
    upgraded rich renders differently."""
    files = [_PACKAGE / rel for rel in _RENDER_CODE]
    try:
        files += sorted(p for p in (_PACKAGE / "render").iterdir() if p.suffix == ".py")
    except OSError:
        pass
    spec = find_spec("rich")
    if spec is not None and spec.origin:
        files.append(Path(spec.origin).parent / "console.py")
    return [[str(p), _stat(p)] for p in files]


def key(command: str, run_arg: str) -> dict[str, Any] | None:
    """What the text of ``dsprof <command> <run_arg>`` depends on, now; None when it cannot
    be known (:func:`conditions`)."""
    cond = conditions()
    if cond is None:
        return None
    run = Path(run_arg)
    return {"format": RENDERED_FORMAT, "dsprof": __version__, "argv": [command, str(run)],
            "files": stored.fingerprint(run),
            "reports": [_stat(stored.report_path(run, command)),
                        _stat(run / "findings.json")],
            "code": _code(), "conditions": cond}


def save(run_arg: str, command: str, text: str, rendered_key: dict[str, Any]) -> bool:
    """Keep ``text``, rendered under ``rendered_key`` (taken before rendering: a file that
    changed meanwhile makes the text stale, never wrongly current). False when the run
    directory is read-only."""
    from dsprof.rundir import atomic_write_bytes

    try:
        atomic_write_bytes(rendered_path(run_arg, command),
                           orjson.dumps({"key": rendered_key, "text": text}), durable=False)
    except OSError:
        return False
    return True


def current_text(args: list[str]) -> str | None:
    """What ``dsprof <args>`` prints, when ``args`` is ``summary RUN`` or ``gpu RUN`` (no
    option) and RUN holds that text, current (module docstring); else None."""
    if len(args) != 2 or args[0] not in COMMANDS or args[1].startswith("-"):
        return None
    command, run_arg = args
    try:
        doc = orjson.loads(rendered_path(run_arg, command).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
        return None
    now = key(command, run_arg)
    if now is None or doc.get("key") != now:
        return None
    text: str = doc["text"]
    return text
