"""Which host span holds which: parent and depth of every span of a trace, vectorized (the
stack sweep of a timeline without its Python loop), and rows grouped by depth."""

from __future__ import annotations

import numpy as np


def nest(start: np.ndarray, end: np.ndarray, skip: np.ndarray,
          threads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parent row (-1: none) and depth of each span; rows sorted by (thread, start, -dur).

    This is the classic sweep -- per thread, pop the stack while its top ended at or before
    this span's start, the top is then the parent, push the span -- computed without the loop.
    Every earlier span of the thread that ends after ``start[k]`` is still on the stack when
    ``k`` arrives (it could only have been popped by an earlier, hence smaller, start), and
    popping stops at the highest of them, so the parent of ``k`` is the last earlier row of
    its thread whose end is past ``start[k]``. That "last row before k with end > x" query is
    answered for all rows at once by descending a sparse table of range maxima. Stack
    neighbours are parent and child, so depth is the length of the parent chain. ``skip``
    spans (step markers) are never parents and have none.
    """
    n = len(start)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    # One barrier row (end = +inf) before each thread's rows stops every search there.
    first = np.ones(n, bool)
    first[1:] = threads[1:] != threads[:-1]
    pos = np.arange(n) + np.cumsum(first)  # row -> position in the extended array
    big = np.iinfo(np.int64).max
    ext = np.full(n + int(first.sum()), big, np.int64)
    ext[pos] = np.where(skip, np.iinfo(np.int64).min, end)
    # table[l][i] = max(ext[i - 2**l + 1 .. i])
    table = [ext]
    width = 1
    while width * 2 <= len(ext):
        prev = table[-1]
        nxt = prev.copy()
        nxt[width:] = np.maximum(prev[width:], prev[:-width])
        table.append(nxt)
        width *= 2
    # From just before each row, skip back over blocks that all end at or before its start.
    at = pos - 1
    for level in range(len(table) - 1, -1, -1):
        width = 1 << level
        ok = at - width + 1 >= 0
        cand = np.flatnonzero(ok)
        hop = table[level][at[cand]] <= start[cand]
        at[cand[hop]] -= width
    row_of = np.full(len(ext), -1, np.int64)  # barrier positions -> -1
    row_of[pos] = np.arange(n)
    parent = np.where(skip, -1, row_of[at])
    # depth by pointer jumping along the parent chain
    depth = (parent >= 0).astype(np.int64)
    up = parent.copy()
    while True:
        live = np.flatnonzero(up >= 0)
        if not len(live):
            break
        anc = up[live]
        depth[live] += depth[anc]
        up[live] = up[anc]
    return parent, depth.astype(np.int32)


def levels(depth: np.ndarray) -> list[np.ndarray]:
    """Rows grouped by depth, shallowest first (each group in row order)."""
    if not len(depth):
        return []
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.cumsum(np.bincount(depth))
    return np.split(by_depth, bounds[:-1])
