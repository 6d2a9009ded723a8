"""The run's timeline as sorted arrays, and level-of-detail answers for a visible range.

A browser cannot draw a million spans (100 k bars already take tens of seconds in headless
Chromium), so the server never ships all events. :class:`TimelineIndex` holds every span of a
run (steps, host ops, device kernels, collectives) in numpy arrays sorted by start, and
:meth:`TimelineIndex.window` answers "what is visible in [x0, x1]" with at most ``budget``
shapes:

* when at most ``budget`` spans overlap the range, all of them, exactly;
* otherwise, per lane, the runs of busy pixels (the range cut in ``bins`` bins; a bin is busy
  when any span covers part of it) drawn light, plus the longest spans that are at least two
  bins wide drawn exactly on top, up to the budget. Nothing drawn is narrower than a bin.

Lanes are one row per rank for steps, one per (rank, thread, nesting depth) for host ops
(depth capped at :data:`MAX_DEPTH`), one per (rank, device, stream) for kernels and one per rank
for collectives. Times are ns relative to ``t0_ns`` (the earliest span), so they stay exact in
float64 milliseconds for plotting.

Visible spans are found with two binary searches: spans are sorted by start, and the few very
long ones (longer than the 99.9th percentile, e.g. step 0 or a whole-window annotation) are kept
aside and checked one by one, so a long span never widens the search to the whole array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Kinds of span, stored per span; also the first field of a bar's customdata.
STEP, OP, KERNEL, COMM = 0, 1, 2, 3
MAX_DEPTH = 5
"""Host ops nested deeper than this share the row of depth MAX_DEPTH."""
DEFAULT_BUDGET = 2000
"""Shapes per response: ~0.8 s to draw in headless Chromium on 2 cores; more gets slow."""


@dataclass
class Window:
    """What to draw for one visible range (ns relative to the index's t0).

    ``exact`` holds indices into the index's arrays of spans drawn one by one; ``runs`` the
    aggregated busy runs as (lane, start_ns, end_ns, spans) arrays, empty when exact.
    """

    x0: int
    x1: int
    visible: int
    exact: np.ndarray
    aggregated: bool
    runs: dict[str, np.ndarray] = field(default_factory=dict)
    bin_ns: float = 0.0


@dataclass
class TimelineIndex:
    """Every span of a run, sorted by start; build with :func:`build_index`."""

    t0_ns: int
    start: np.ndarray        # int64 ns since t0
    end: np.ndarray          # int64 ns since t0
    lane: np.ndarray         # int32 row
    kind: np.ndarray         # int8 STEP/OP/KERNEL/COMM
    cls: np.ndarray          # int16 index into classes (phase, kernel kind, ...)
    name: np.ndarray         # int32 index into names
    ref: np.ndarray          # int64: step number, ops.id, kernel start_ns, comms start_ns
    rank: np.ndarray         # int32
    names: np.ndarray        # object array of str
    classes: list[str]
    lane_labels: list[str]
    idle_kinds: dict[int, str] = field(default_factory=dict)
    """Lanes whose gaps are idle time, and what idles there: "GPU stream" for a kernel
    lane, "host thread" for the outermost ops of a thread (nesting depth 0)."""
    long_idx: np.ndarray = field(init=False)
    short_max: int = field(init=False)

    def __post_init__(self) -> None:
        dur = self.end - self.start
        if len(dur) > 1000:
            cut = int(np.quantile(dur, 0.999))
            long = dur > cut
        else:
            cut, long = int(dur.max()) if len(dur) else 0, np.zeros(len(dur), bool)
        self.long_idx = np.flatnonzero(long)
        self.short_max = int(dur[~long].max()) if (~long).any() else 0
        self._is_long = long
        self._whole: Window | None = None

    def __len__(self) -> int:
        return len(self.start)

    @property
    def span_ns(self) -> int:
        return int(self.end.max()) if len(self.end) else 0

    def _select(self, x0: int, x1: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        """(i0, i1, keep, longs): the short spans overlapping [x0, x1] are those at
        i0 + flatnonzero(keep); ``longs`` are the long ones (their positions)."""
        i0 = int(np.searchsorted(self.start, x0 - self.short_max, "left"))
        i1 = int(np.searchsorted(self.start, x1, "right"))
        keep = self.end[i0:i1] >= x0
        keep &= ~self._is_long[i0:i1]
        la = self.long_idx
        longs = la[(self.start[la] <= x1) & (self.end[la] >= x0)]
        return i0, i1, keep, longs

    def visible(self, x0: int, x1: int) -> np.ndarray:
        """Indices (ascending) of spans overlapping [x0, x1]."""
        i0, _, keep, longs = self._select(x0, x1)
        idx = np.flatnonzero(keep) + i0
        if len(longs):  # disjoint from idx (long spans were left out of it): merge, O(n)
            idx = np.insert(idx, np.searchsorted(idx, longs), longs)
        return idx

    def window(self, x0: int | None = None, x1: int | None = None,
               budget: int = DEFAULT_BUDGET, bins: int = 600) -> Window:
        """The shapes to draw for [x0, x1] (the whole run when None), at most ``budget``."""
        whole = x0 is None and x1 is None and budget == DEFAULT_BUDGET and bins == 600
        if whole and self._whole is not None:  # first render and every reset: seconds at 10 M
            return self._whole
        x0 = 0 if x0 is None else int(x0)
        x1 = self.span_ns if x1 is None else int(x1)
        if x1 <= x0:
            x1 = x0 + 1
        win = self._window(x0, x1, budget, bins)
        if whole:
            self._whole = win
        return win

    def _window(self, x0: int, x1: int, budget: int, bins: int) -> Window:
        i0, i1, keep, longs = self._select(x0, x1)
        visible = int(np.count_nonzero(keep)) + len(longs)
        if visible <= budget:
            return Window(x0, x1, visible, self.visible(x0, x1), False)
        # Work on views when every candidate is visible (the common zoomed-out case): at 10 M
        # spans each fancy-indexed copy costs more than the whole aggregation.
        sel = None if keep.all() else np.flatnonzero(keep) + i0
        pick = (lambda a: a[i0:i1]) if sel is None else (lambda a: a[sel])
        start, end, lane = pick(self.start), pick(self.end), pick(self.lane)
        if len(longs):
            start = np.concatenate([start, self.start[longs]])
            end = np.concatenate([end, self.end[longs]])
            lane = np.concatenate([lane, self.lane[longs]])
        n_lanes = len(self.lane_labels)
        while True:
            runs, bin_ns = _busy_runs(start, end, lane, x0, x1, n_lanes, bins)
            if len(runs["lane"]) <= budget // 2 or bins <= 20:
                break
            bins //= 2
        dur = end - start
        big = np.flatnonzero(dur > 2 * bin_ns)
        room = max(budget - len(runs["lane"]), 0)
        if len(big) > room:
            big = big[np.argpartition(dur[big], len(big) - room)[len(big) - room:]] \
                if room else big[:0]
        n_short = len(start) - len(longs)
        short = big[big < n_short]
        pos = np.concatenate([short + i0 if sel is None else sel[short],
                              longs[big[big >= n_short] - n_short]])
        return Window(x0, x1, visible, np.sort(pos), True, runs, bin_ns)


def fetch_range(x0: int, x1: int, span_ns: int) -> tuple[int, int]:
    """The range the server sends for a view of [x0, x1]: half a view more on each side
    (clipped to the run), so pans and zooms of up to that much redraw in the browser."""
    half = max((x1 - x0) // 2, 1)
    return max(x0 - half, min(0, x0)), min(x1 + half, max(span_ns, x1))


def idle_gaps(index: TimelineIndex, win: Window, min_gap_ns: float,
              limit: int = 300) -> dict[str, np.ndarray]:
    """Per idle lane (``index.idle_kinds``), the gaps in ``win`` at least ``min_gap_ns`` wide
    during which nothing ran on it: between consecutive spans when the window is exact,
    between busy runs (to a bin's precision) when aggregated. The ``limit`` widest."""
    lanes, starts, ends = [], [], []
    idle = np.zeros(len(index.lane_labels) + 1, bool)
    idle[list(index.idle_kinds)] = True
    if win.aggregated:
        runs = win.runs
        on = idle[runs["lane"]]
        lane, start, end = runs["lane"][on], runs["start"][on], runs["end"][on]
        # runs come lane by lane, in time order: a gap is a run's end to the next run's start
        same = lane[1:] == lane[:-1]
        lanes.append(lane[1:][same])
        starts.append(end[:-1][same])
        ends.append(start[1:][same])
    else:
        sel = win.exact[idle[index.lane[win.exact]]]
        for k in np.unique(index.lane[sel]):
            mine = sel[index.lane[sel] == k]  # ascending position = ascending start
            reach = np.maximum.accumulate(index.end[mine])  # nested/overlapping spans
            lanes.append(np.full(len(mine) - 1, k))
            starts.append(reach[:-1])
            ends.append(index.start[mine][1:])
    if not lanes:
        return {"lane": np.zeros(0, np.int64), "start": np.zeros(0), "end": np.zeros(0)}
    lane, start, end = (np.concatenate(a) for a in (lanes, starts, ends))
    start, end = np.maximum(start, win.x0), np.minimum(end, win.x1)
    keep = np.flatnonzero(end - start >= max(min_gap_ns, 1))
    if len(keep) > limit:
        keep = keep[np.argpartition(end[keep] - start[keep], len(keep) - limit)[-limit:]]
    return {"lane": lane[keep].astype(np.int64), "start": start[keep].astype(float),
            "end": end[keep].astype(float)}


def _busy_runs(start: np.ndarray, end: np.ndarray, lane: np.ndarray, x0: int, x1: int,
               n_lanes: int, bins: int) -> tuple[dict[str, np.ndarray], float]:
    """Per lane, the runs of consecutive bins that some span covers, and how many spans start
    in each run."""
    w = (x1 - x0) / bins
    b0 = np.clip(((start - x0) / w).astype(np.int64), 0, bins - 1)
    b1 = np.clip(((end - x0) / w).astype(np.int64), 0, bins - 1)
    lane = lane.astype(np.int64)
    width = bins + 1
    size = n_lanes * width
    cover = (np.bincount(lane * width + b0, minlength=size)
             - np.bincount(lane * width + b1 + 1, minlength=size)).reshape(n_lanes, width)
    busy = np.cumsum(cover[:, :bins], axis=1) > 0
    starts = np.bincount(lane * bins + b0, minlength=n_lanes * bins).reshape(n_lanes, bins)
    pad = np.zeros((n_lanes, 1), bool)
    edges = np.diff(np.concatenate([pad, busy, pad], axis=1).astype(np.int8), axis=1)
    run_lane, run_start = np.nonzero(edges == 1)
    _, run_end = np.nonzero(edges == -1)  # row-major order pairs each start with its end
    csum = np.concatenate([np.zeros((n_lanes, 1), np.int64), np.cumsum(starts, axis=1)],
                          axis=1)
    spans = csum[run_lane, run_end] - csum[run_lane, run_start]
    return ({"lane": run_lane, "start": x0 + run_start * w, "end": x0 + run_end * w,
             "spans": spans}, w)


def build_index(columns: dict[str, dict[str, Any]], lane_labels: list[str],
                classes: list[str], idle_kinds: dict[int, str] | None = None) -> TimelineIndex:
    """Concatenate per-kind column dicts (start_ns, end_ns, lane, kind, cls, name, ref, rank;
    ``name`` an Arrow string array) into one index sorted by start."""
    parts = [c for c in columns.values() if len(c["start_ns"])]
    if not parts:
        empty = np.zeros(0, np.int64)
        return TimelineIndex(0, empty, empty, empty.astype(np.int32), empty.astype(np.int8),
                             empty.astype(np.int16), empty.astype(np.int32), empty,
                             empty.astype(np.int32), np.array([], object), classes, lane_labels,
                             dict(idle_kinds or {}))
    start = np.concatenate([np.asarray(p["start_ns"], np.int64) for p in parts])
    end = np.concatenate([np.asarray(p["end_ns"], np.int64) for p in parts])
    names = pa.chunked_array([p["name"] for p in parts], pa.string())
    encoded = pc.dictionary_encode(names).combine_chunks()
    t0 = int(start.min())
    order = np.argsort(start, kind="stable")

    def cat(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate([np.asarray(p[key], dtype) for p in parts])[order]

    return TimelineIndex(
        t0_ns=t0, start=start[order] - t0, end=np.maximum(end, start)[order] - t0,
        lane=cat("lane", np.int32), kind=cat("kind", np.int8), cls=cat("cls", np.int16),
        name=encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)[order],
        ref=cat("ref", np.int64), rank=cat("rank", np.int32),
        names=np.asarray(encoded.dictionary.to_pylist(), dtype=object),
        classes=classes, lane_labels=lane_labels, idle_kinds=dict(idle_kinds or {}))
