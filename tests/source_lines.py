"""Where a test's own lines are, for tests that check a recorded ``file:line``."""

from __future__ import annotations

import os


def line_of(path: str, marker: str) -> str:
    """``name.py:N`` of the line of ``path`` that holds ``marker`` (in a comment), skipping the
    lines that ask for it (they hold the marker too)."""
    with open(path) as f:
        lines = f.read().splitlines()
    for no, line in enumerate(lines, 1):
        if marker in line and "_line_of" not in line:
            return f"{os.path.basename(path)}:{no}"
    raise AssertionError(marker)
