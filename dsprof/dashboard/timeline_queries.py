"""Questions the Timeline page asks of the run's timeline index (``RunSource.timeline``):
the spans a search matches, what a selected range holds, and the host op that launched a
kernel. Numpy over the index (one SQL lookup for a kernel's op), no figure work."""

from __future__ import annotations

import numpy as np

from dsprof.dashboard.source import RunSource
from dsprof.dashboard.text import fmt_ns
from dsprof.dashboard.timeline import COMM, KERNEL, OP

SEARCH_LIMIT = 500


def search_spans(src: RunSource, text: str | None) -> np.ndarray:
    """Positions of the spans whose name contains ``text`` (case-insensitive), earliest first,
    at most SEARCH_LIMIT. Matches the distinct names, then the spans that carry them."""
    index = src.timeline
    needle = (text or "").strip().lower()
    if not needle or len(index) == 0:
        return np.zeros(0, np.int64)
    codes = [i for i, n in enumerate(index.names) if needle in str(n).lower()]
    if not codes:
        return np.zeros(0, np.int64)
    hits = np.flatnonzero(np.isin(index.name, np.asarray(codes)))
    return hits[np.argsort(index.start[hits], kind="stable")][:SEARCH_LIMIT]


def range_summary(src: RunSource, x0: int | None, x1: int | None, top: int = 8) -> list[str]:
    """What the range holds (ns since t0; None: the whole run): per kind of span, the names
    with the most time inside the range (each span clipped to it), Perfetto's "summary of a
    selection". Remembered per range: every load of the page asks for the opened range again
    (1-1.5 s over 10 M spans)."""
    index = src.timeline
    if len(index) == 0:
        return []
    lo = 0 if x0 is None else x0
    hi = int(index.end.max()) if x1 is None else x1
    cache = index.__dict__.setdefault("_summaries", {})
    if (lo, hi, top) in cache:
        return list(cache[(lo, hi, top)])
    # only the spans near the range (two binary searches), unless it is the whole run
    near = slice(None) if lo <= 0 and hi >= index.span_ns else index.visible(lo, hi)
    start, end, kinds, names = (a[near] for a in (index.start, index.end, index.kind,
                                                 index.name))
    inside = (start < hi) & (end > lo)
    clipped = np.minimum(end, hi) - np.maximum(start, lo)
    lines = [f"{fmt_ns(hi - lo)} in range"]
    for kind, label in ((OP, "host ops"), (KERNEL, "kernels"), (COMM, "collectives")):
        sel = inside & (kinds == kind)
        n = int(np.count_nonzero(sel))
        if not n:
            continue
        per_name = np.bincount(names[sel], weights=clipped[sel], minlength=len(index.names))
        best = np.argsort(-per_name, kind="stable")[:top]
        parts = [f"{_short(index.names[k])} {fmt_ns(per_name[k])}" for k in best
                 if per_name[k] > 0]
        lines.append(f"{label} ({n:,}): " + ", ".join(parts))
    if len(cache) >= 64:
        cache.clear()
    cache[(lo, hi, top)] = lines
    return list(lines)


def _short(name: object, width: int = 80) -> str:
    """A name cut to ``width`` characters (templated kernel names run to thousands)."""
    text = str(name)
    return text if len(text) <= width else text[:width - 1] + "…"


def launch_flow(src: RunSource, pos: int) -> tuple[int, int] | None:
    """For a kernel span at index position ``pos``: (op position, kernel position) of the host
    op that launched it (``kernels.op_id``), for the CPU op -> kernel arrow; else None."""
    index = src.timeline
    if not 0 <= pos < len(index) or int(index.kind[pos]) != KERNEL \
            or "op_id" not in src.columns("kernels"):
        return None
    rank = int(index.rank[pos])
    rows = src.sql("SELECT op_id FROM kernels WHERE rank = ? AND start_ns = ? "
                   "AND op_id IS NOT NULL LIMIT 1", [rank, int(index.ref[pos])])
    if not rows:
        return None
    ops = np.flatnonzero((index.kind == OP) & (index.ref == int(rows[0][0]))
                         & (index.rank == rank))
    return (int(ops[0]), pos) if len(ops) else None
