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


def saving_per(finding: object) -> str:
    """What a finding's time saving is counted over: "step", or on a trace that marks no steps
    "capture" / "iteration" (``data.saving_per``, set by the analyzers), as the terminal says."""
    data = getattr(finding, "data", None)
    per = data.get("saving_per") if isinstance(data, dict) else None
    return str(per) if per else "step"


def fmt_saving(finding: object, sep: str = "/") -> str:
    """A finding's time saving with its unit and share: ``1.50 ms/step (2.0 % of a step)``; a
    trace without steps says ``ms/capture`` and the share of the capture."""
    per = saving_per(finding)
    ms = getattr(finding, "saving_s", 0.0) * 1e3
    share = getattr(finding, "share", 0.0) or 0.0
    # no share when the run gives none (a trace without steps has no step to divide by):
    # "0.0 % of a capture" would read as "nothing to gain"
    return f"{ms:.2f} ms{sep}{per}" + (f" ({share * 100:.1f} % of {a_per(per)})" if share else "")


def a_per(per: str) -> str:
    """``a step``, ``a capture``, ``an iteration``."""
    return ("an " if per[:1] in "aeiou" else "a ") + per
