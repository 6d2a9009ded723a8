"""The evidence highlight stands out against every category colour, by contrast and pattern,
never by hue alone (a red highlight beside red communication kernels was missed)."""

from __future__ import annotations

from dsprof.dashboard import palette
from dsprof.dashboard.figures.timeline import (
    COLORS,
    EVIDENCE_LINE,
    HIGHLIGHT,
    HIGHLIGHT_BORDER,
    HIGHLIGHT_PATTERN,
)


def _luminance(hex_color: str) -> float:
    """WCAG relative luminance of ``#rrggbb``."""
    rgb = [int(hex_color[k:k + 2], 16) / 255 for k in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def every_category_colour() -> set[str]:
    tables = (COLORS, palette.STEP_COLORS, palette.MEMORY_COLORS, palette.KERNEL_TYPE_COLORS)
    return {c.upper() for t in tables for c in t.values()} | {c.upper() for c in palette._CYCLE}


def test_contrast_formula():
    assert contrast("#000000", "#FFFFFF") == 21.0
    assert contrast("#777777", "#777777") == 1.0


def test_highlight_stands_out_against_every_category():
    colours = every_category_colour()
    assert HIGHLIGHT.upper() not in colours
    # the fill or its hatch contrasts at least 3:1 (WCAG for graphics) with each category:
    # black against the light ones, the white hatch against the dark ones
    weak = {c: (round(contrast(HIGHLIGHT, c), 2), round(contrast(HIGHLIGHT_PATTERN["fgcolor"], c), 2))
            for c in colours
            if max(contrast(HIGHLIGHT, c), contrast(HIGHLIGHT_PATTERN["fgcolor"], c)) < 3}
    assert not weak, weak
    # and never a hue: black, a pattern and a thick border, a dashed frame for a range
    assert HIGHLIGHT_PATTERN["shape"] and HIGHLIGHT_BORDER["width"] >= 2
    assert EVIDENCE_LINE["color"] == "#000000" and EVIDENCE_LINE["dash"] == "dash"
