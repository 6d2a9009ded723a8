"""Formatting helpers shared by figures and pages.

Op names, module paths and file paths come from traces and are untrusted. Dash components
render strings as text, never as HTML, but plotly interprets a subset of HTML in trace text,
hover text, axis labels and titles (``<a href>``, ``<b>``, ``<br>``). :func:`plain` escapes a
string for those places so it is shown literally.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from dsprof import units


def plain(text: object) -> str:
    """``text`` escaped for plotly's HTML-like labels: shown as written, never interpreted."""
    return html.escape(str(text), quote=False)


def plain_all(texts: Iterable[object]) -> list[str]:
    return [plain(t) for t in texts]


def fmt_bytes(n: float | None) -> str:
    """Bytes as the dashboard shows them (one decimal: :func:`dsprof.units.fmt_bytes`)."""
    return units.fmt_bytes(n, decimals=1)


def fmt_ms(ms: float | None) -> str:
    return units.fmt_duration_ms(ms)


def fmt_ns(ns: float | None) -> str:
    return "-" if ns is None else fmt_ms(ns / 1e6)
