"""Progress of dsprof's own long commands (``verify``, ``tune``): what is running now.

Only for commands whose terminal dsprof owns (the reruns' output is hidden): a rich status
line with a spinner and the elapsed time on an interactive stderr, one plain line per stage
otherwise (CI logs, pipes). While a profiled script runs, dsprof prints no progress to its
terminal at all (docs/decisions.md, "Progress").
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from dsprof.render.safe_text import esc, make_console


class CommandProgress:
    """``with CommandProgress("verify") as p: p.stage("rerun 1/2: ...")``."""

    def __init__(self, command: str, live: bool | None = None):
        self.command = command
        self.live = sys.stderr.isatty() if live is None else live
        self.console = make_console(stderr=True, highlight=False)
        self._status: Any = None
        self._text = ""
        self._t0 = time.monotonic()

    def __enter__(self) -> CommandProgress:  # noqa: PYI034 - Self needs Python 3.11
        if self.live:
            self._status = self.console.status(f"dsprof {esc(self.command)}: starting")
            self._status.__enter__()
        return self

    def stage(self, text: str) -> None:
        self._text = text
        if self._status is not None:
            self._status.update(f"dsprof {esc(self.command)}: {esc(text)} "
                                f"[dim]({time.monotonic() - self._t0:.0f} s)[/]")
        else:
            self.console.print(f"dsprof {esc(self.command)}: {esc(text)}", soft_wrap=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._status is not None:
            self._status.__exit__(exc_type, exc, tb)
