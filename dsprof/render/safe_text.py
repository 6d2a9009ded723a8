"""The one path from trace and run text to the terminal.

Op names, module names, file paths, stacks and finding titles come from traces and run
directories, which other people write. Printed as they are, ``[/bold]close`` kills rich with a
``MarkupError``, ``[link=https://...]`` becomes a hyperlink, and ``\\x1b]0;title\\x07`` or
``\\x1b[2J`` drive the user's terminal. So:

- :func:`clean` makes control characters visible (``\\x1b`` is printed as the four characters
  ``\\x1b``): C0 except newline and tab, DEL, C1, and the bidirectional overrides that reorder
  what a line appears to say. Used by the log formatter too.
- :func:`esc` is :func:`clean` plus rich markup escaping: every value interpolated into a
  markup string (``f"[bold]{esc(name)}[/]"``) goes through it.
- :func:`plain` is a rich ``Text`` (never parsed as markup), for table cells and whole lines.
- :func:`make_console` gives the console every command prints with: it cleans the text of every
  segment once more just before it is written, so a string a renderer forgot to pass through
  :func:`esc` can at worst look wrong, never reach the terminal as an escape sequence, and a
  string that is not valid markup is printed as plain text rather than raising MarkupError.

This module imports rich only when a console or Text is made, so the logger (imported in the
profiled process) can use :func:`clean` without loading rich.
"""

from __future__ import annotations

import keyword
import re
from typing import Any

# C0 controls but \t and \n, DEL, C1 controls, the Unicode line and paragraph separators
# (editors and str.splitlines break lines there), and bidi embeddings/overrides/isolates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: Any) -> str:
    """``text`` as a string with every control character written out visibly."""
    s = text if isinstance(text, str) else str(text)
    return _CONTROL.sub(_visible, s)


def one_line(text: Any) -> str:
    """``text`` on one line, line breaks written out too: what a run directory gives (a file
    path, a module name) put into a ``#`` comment of a fix to paste can never start a line of
    code there."""
    return clean(text).replace("\n", "\\n")


def python_attr(base: str, name: str) -> str:
    """``base.name`` as Python code, where ``name`` comes from a run directory: a module's
    child name is any string but one with a dot (``nn.ModuleDict({"conv-1": ...})``), so a
    name that is not an identifier becomes ``getattr(base, 'conv-1')``, its text a string
    literal on one line, never code."""
    if name.isidentifier() and not keyword.iskeyword(name):
        return f"{base}.{name}"
    return f"getattr({base}, {name!r})"


def esc(text: Any) -> str:
    """``text`` made safe to interpolate into a rich markup string."""
    from rich.markup import escape

    return escape(clean(text))


def plain(text: Any, style: str = "") -> Any:
    """A rich ``Text`` of ``text``: shown literally, never parsed as markup."""
    from rich.text import Text

    return Text(clean(text), style=style)


_console_class: Any = None


def make_console(**kwargs: Any) -> Any:
    """A rich Console (same arguments) whose output carries no control character that did not
    come from rich's own styling; ``highlight`` defaults to False (no guessing colours from
    numbers in data)."""
    global _console_class
    if _console_class is None:
        from rich.console import Console

        class SafeConsole(Console):
            """Cleans each text segment just before it is written (the last line of defence:
            segments rich marks as control are its own cursor moves, kept)."""

            def render_str(self, text: str, **kw: Any) -> Any:
                # Clean before measuring, so widths are those of what is printed. A string a
                # renderer forgot to escape that is not valid markup prints as plain text
                # instead of killing the command.
                from rich.errors import MarkupError
                from rich.text import Text

                try:
                    return super().render_str(clean(text), **kw)
                except MarkupError:
                    return Text(clean(text), style=kw.get("style") or "")

            def _render_buffer(self, buffer: Any) -> str:
                from rich.segment import Segment

                return super()._render_buffer(
                    seg if seg.control else Segment(clean(seg.text), seg.style, seg.control)
                    for seg in buffer)

        _console_class = SafeConsole
    kwargs.setdefault("highlight", False)
    return _console_class(**kwargs)
