"""Colours the pages share, fixed per name so a category keeps its colour on every chart and
every redraw (plotly's default colourway hands colours out by trace order, which changes when
a trace is absent).

Colours come from the Okabe-Ito colour-blind-safe set plus greys and a few distinct extras.
Red and green are never the only thing telling two series apart: the charts that contrast a
good and a bad series (overlapped vs exposed, faster vs slower) also give the bad one a hatch
pattern and say it in the legend and the bar text.
"""

from __future__ import annotations

import hashlib

# Categories of one chart never share a colour (tests/unit/test_dashboard_palette.py).
STEP_COLORS = {
    # GPU step breakdown (tb_plugin's roles)
    "kernel": "#0072B2", "memcpy": "#E69F00", "memset": "#8C564B",
    "communication": "#CC79A7", "runtime": "#D55E00", "data loading": "#F0E442",
    "CPU ops": "#009E73",
    # CPU step breakdown (phases)
    "forward": "#0072B2", "backward": "#E69F00", "optimizer": "#009E73",
    "other ops": "#56B4E9", "untraced": "#BBBBBB",
}

MEMORY_COLORS = {
    "parameter": "#0072B2", "gradient": "#E69F00", "optimizer_state": "#009E73",
    "activation": "#D55E00", "temporary": "#CC79A7", "input": "#8C564B",
    "autograd_detail": "#56B4E9", "other": "#F0E442", "unknown": "#999999",
    "uncategorized": "#CCCCCC", "unattributed": "#DDDDDD",
}

# HTA's kernel types and their overlaps (the Overview's pie)
KERNEL_TYPE_COLORS = {
    "COMPUTATION": "#0072B2", "COMMUNICATION": "#CC79A7", "MEMORY": "#E69F00",
    "COMPUTATION overlapping COMMUNICATION": "#56B4E9",
    "COMPUTATION overlapping MEMORY": "#009E73",
    "COMMUNICATION overlapping MEMORY": "#D55E00",
    "COMPUTATION overlapping COMMUNICATION overlapping MEMORY": "#999999",
}

# For keys with no fixed colour (modules, ranks, collectives): a colour from the key's hash,
# so it does not depend on which other keys the chart has.
_CYCLE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C564B",
          "#882255", "#17BECF", "#9467BD", "#BCBD22", "#1B4F72")

GOOD = "#009E73"      # bluish green
BAD = "#D55E00"       # vermillion
BAD_PATTERN = {"shape": "/", "fgcolor": "#FFFFFF", "size": 8, "solidity": 0.25}


def color_for(key: str) -> str:
    """A colour for ``key`` that stays the same from chart to chart and redraw to redraw."""
    for table in (STEP_COLORS, MEMORY_COLORS, KERNEL_TYPE_COLORS):
        if key in table:
            return table[key]
    digest = hashlib.blake2b(key.encode(), digest_size=2).digest()
    return _CYCLE[int.from_bytes(digest, "big") % len(_CYCLE)]


def distinct_colors(keys: list[str]) -> dict[str, str]:
    """A colour per key, no two alike (up to len(_CYCLE) keys without a fixed colour): a key
    keeps its hash colour unless an earlier key (in sorted order, so the result depends on the
    set of keys only) took it."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for key in sorted(keys):
        color = color_for(key)
        if color in used:
            free = [c for c in _CYCLE if c not in used]
            color = free[0] if free else color
        out[key] = color
        used.add(color)
    return out
