"""Formatting helpers shared by figures and pages.

Op names, module paths and file paths come from traces and are untrusted. Dash components
render strings as text, never as HTML, but plotly interprets a subset of HTML in trace text,
hover text, axis labels and titles (``<a href>``, ``<b>``, ``<br>``). :func:`plain` escapes a
string for those places so it is shown literally.
"""

from __future__ import annotations

import html
from collections.abc import Iterable


def plain(text: object) -> str:
    """``text`` escaped for plotly's HTML-like labels: shown as written, never interpreted."""
    return html.escape(str(text), quote=False)


def plain_all(texts: Iterable[object]) -> list[str]:
    return [plain(t) for t in texts]


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop always returns


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if abs(ms) >= 1000:
        return f"{ms / 1000:.2f} s"
    if abs(ms) >= 1:
        return f"{ms:.2f} ms"
    return f"{ms * 1000:.1f} us"


def fmt_ns(ns: float | None) -> str:
    return "-" if ns is None else fmt_ms(ns / 1e6)
