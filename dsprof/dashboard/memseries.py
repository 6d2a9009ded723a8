"""Memory over time from the ``memory`` table, downsampled for drawing.

A run can hold millions of allocator events; a line needs about a thousand points. The range
is cut in bins and each bin is drawn at its highest point (the first event where the running
total peaks in that bin), so no peak is lost at any zoom. The by-category split is read at the
same events, so the stacked areas add up to the drawn total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsprof.dashboard.duck import arrow
from dsprof.run import Run


@dataclass
class DeviceSeries:
    """One (rank, device): events sorted by time, times in ns relative to the run's t0."""

    rank: int
    device: str
    ts: np.ndarray           # int64
    total: np.ndarray        # int64 bytes allocated after each event
    nbytes: np.ndarray       # int64 signed change per event
    category: np.ndarray     # int16 index into categories, -1 when unknown
    categories: list[str]

    @property
    def label(self) -> str:
        return f"r{self.rank} {self.device}"

    def sample(self, x0: int, x1: int, points: int = 1000) -> np.ndarray:
        """Indices of the events to draw for [x0, x1]: per bin the peak, plus the last event
        before x0 (the level the range starts at)."""
        if len(self.ts) == 0:
            return np.zeros(0, np.int64)
        edges = np.linspace(x0, x1, points + 1)
        lo = int(np.searchsorted(self.ts, x0, "left"))
        hi = int(np.searchsorted(self.ts, x1, "right"))
        before = [lo - 1] if lo > 0 else []
        if hi <= lo:
            return np.array(before + ([lo] if lo < len(self.ts) and not before else []), np.int64)
        idx = np.arange(lo, hi)
        bin_of = np.clip(np.searchsorted(edges, self.ts[idx], "right") - 1, 0, points - 1)
        starts = np.flatnonzero(np.r_[True, bin_of[1:] != bin_of[:-1]])
        vals = self.total[idx]
        peak = np.maximum.reduceat(vals, starts)
        counts = np.diff(np.r_[starts, len(idx)])
        is_peak = vals == np.repeat(peak, counts)
        first = np.minimum.reduceat(np.where(is_peak, np.arange(len(idx)), len(idx)), starts)
        return np.r_[np.array(before, np.int64), idx[first]]

    def live_by_category(self, at: np.ndarray) -> dict[str, np.ndarray]:
        """Bytes live per category right after each event in ``at`` (sorted indices)."""
        out: dict[str, np.ndarray] = {}
        for k, name in enumerate(self.categories):
            live = np.cumsum(np.where(self.category == k, self.nbytes, 0))[at]
            if live.any():
                out[name] = live
        unknown = np.cumsum(np.where(self.category < 0, self.nbytes, 0))[at]
        if unknown.any():
            out["unknown" if "unknown" not in out else "uncategorized"] = unknown
        return out


def load_memory(run: Run, t0_ns: int | None) -> list[DeviceSeries]:
    """One series per (rank, device) of the ``memory`` table; [] without one.

    Args:
        t0_ns: the run-clock time drawn as 0 (the timeline's first span); None for the first
            memory event (a run with memory events only).
    """
    if not run.has("memory"):
        return []
    cols = arrow(run, """
        SELECT rank, device, ts_ns, bytes, allocated, category FROM memory
        ORDER BY rank, device, ts_ns NULLS FIRST""")
    if cols.num_rows == 0:
        return []
    rank = cols.column("rank").to_numpy(zero_copy_only=False)
    device = np.asarray(cols.column("device").to_pylist(), dtype=object)
    ts = cols.column("ts_ns").to_numpy(zero_copy_only=False).astype(np.float64)
    nbytes = np.nan_to_num(cols.column("bytes").to_numpy(zero_copy_only=False)
                           .astype(np.float64)).astype(np.int64)
    allocated = cols.column("allocated").to_numpy(zero_copy_only=False).astype(np.float64)
    cat_col = cols.column("category").to_pylist()
    if t0_ns is None:
        t0_ns = int(np.nanmin(ts)) if np.isfinite(ts).any() else 0
    categories = sorted({c for c in cat_col if c is not None})
    cat_idx = {c: i for i, c in enumerate(categories)}
    category = np.array([cat_idx.get(c, -1) for c in cat_col], np.int16) if categories \
        else np.full(len(cat_col), -1, np.int16)
    out = []
    keys = np.flatnonzero(np.r_[True, (rank[1:] != rank[:-1]) | (device[1:] != device[:-1])])
    for a, b in zip(keys, np.r_[keys[1:], len(rank)]):
        t = ts[a:b]
        first = np.nanmin(t) if np.isfinite(t).any() else float(t0_ns)
        t = np.where(np.isnan(t), first, t).astype(np.int64) - t0_ns
        total = allocated[a:b]
        if np.isnan(total).all():
            total = np.cumsum(nbytes[a:b]).astype(np.float64)
        elif np.isnan(total).any():  # carry the last reported total over events without one
            pos = np.maximum.accumulate(np.where(np.isnan(total), 0, np.arange(len(total))))
            total = np.nan_to_num(total[pos])
        total = total.astype(np.int64)
        out.append(DeviceSeries(int(rank[a]), str(device[a]), t, total, nbytes[a:b],
                                category[a:b], categories))
    return out
