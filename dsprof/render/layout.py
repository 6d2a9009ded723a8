"""Fitting names into a terminal of any width, keeping the part a reader tells them apart by.

A file path is told apart by its end (``transformer_lm.py:42``), a module path by its tail
(``blocks.3.attn``): rich's own overflow keeps the head and cuts the end (``TransformerLM.bl…``,
``.../examples/transformer_lm.p…``), which leaves eight rows that read the same. So names are
shortened here, from the left, before they reach a table, and the table keeps them on one line.

``NARROW`` is the width below which a table with a free-text column (findings) is printed as
one header line per row with the text wrapped beneath it: at 80 columns a fifth column gets
~17 characters, and a title spreads over eleven lines.
"""

from __future__ import annotations

import re
from typing import Any

ELLIPSIS = "…"
NARROW = 120

# `path/to/file.py:123` or `path/to/file.py:123 (fn)`: the part after the last `/`
_PATH_LIKE = re.compile(r"[/\\]")


def shorten_left(text: str, width: int, seps: str = "/\\") -> str:
    """``text`` in at most ``width`` characters, cut from the left at a separator when one
    falls inside the kept part (``…/examples/transformer_lm.py:42``), else mid-word."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    room = width - len(ELLIPSIS)
    if room <= 0:
        return text[-width:]
    tail = text[-room:]
    if text[-room - 1] in seps and text[-room - 1] == ".":
        return ELLIPSIS + tail  # the tail starts a dotted part already: `…blocks.3.attn`
    cut = min((tail.find(s) for s in seps if s in tail), default=-1)
    if 0 <= cut < len(tail) - 1:
        # start at a separator: `…/examples/file.py:12` keeps its slash, a dotted name drops
        # its dot (`…blocks.3.attn`)
        tail = tail[cut + 1:] if tail[cut] == "." else tail[cut:]
    return ELLIPSIS + tail


def shorten_path(path: str, width: int) -> str:
    """A file path (possibly ``file.py:LINE`` and a function) kept by its end."""
    return shorten_left(path, width, "/\\")


def shorten_module(name: str, width: int) -> str:
    """A dotted module path kept by its tail: ``…blocks.3.attn``."""
    return shorten_left(name, width, ".")


def shorten_name(name: str, width: int) -> str:
    """A path or a dotted module name, whichever ``name`` looks like."""
    return shorten_path(name, width) if _PATH_LIKE.search(name) else shorten_module(name, width)


def name_width(console_width: int, other_columns: int, minimum: int = 24) -> int:
    """Room for a name column in a table whose other columns (with borders and padding) take
    ``other_columns`` characters."""
    return max(minimum, console_width - other_columns)


def shorten_site(site: str, width: int) -> str:
    """An allocation site: ``/long/path/file.py:42 in forward`` keeps ``file.py:42 in forward``;
    ``aten::mm in Model.blocks.3.attn`` keeps the op and the module's tail."""
    head, sep, tail = site.partition(" in ")
    if sep and not _PATH_LIKE.search(head) and len(head) + len(sep) + 8 <= width:
        return head + sep + shorten_module(tail, width - len(head) - len(sep))
    return shorten_path(site, width)


def print_titled(console: Any, table: Any) -> None:
    """Print a table's title on its own line above it: rich wraps a title at the table's
    width, so a narrow table's title spreads over several lines."""
    title, table.title = table.title, None
    if title:
        console.print(title, style="italic", highlight=False)
    console.print(table)
