"""The vectorized nesting sweep (ingest.nesting.nest) against the plain stack sweep it replaces."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dsprof.ingest.nesting import nest as _nest


def reference(start, end, skip, threads):
    """Per thread, pop while the stack top ended at or before this start; the top is the parent."""
    n = len(start)
    parent, depth = [-1] * n, [0] * n
    stack: list[int] = []
    cur = None
    for i in range(n):
        if skip[i]:
            continue
        if threads[i] != cur:
            stack, cur = [], threads[i]
        while stack and end[stack[-1]] <= start[i]:
            stack.pop()
        if stack:
            parent[i] = stack[-1]
            depth[i] = depth[stack[-1]] + 1
        stack.append(i)
    return parent, depth


spans = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 60), st.integers(0, 40),
                           st.booleans()), min_size=0, max_size=80)


@settings(max_examples=300, deadline=None)
@given(spans)
def test_nest_matches_the_stack_sweep(rows):
    # GIVEN spans on a few threads, some of them step markers, sorted as ingest sorts them
    rows = sorted(rows, key=lambda r: (r[0], r[1], -r[2]))
    threads = np.array([r[0] for r in rows], np.int64)
    start = np.array([r[1] for r in rows], np.int64)
    end = start + np.array([r[2] for r in rows], np.int64)
    skip = np.array([r[3] and r[2] % 3 == 0 for r in rows], bool)
    # WHEN nested THEN parents and depths are the sweep's
    parent, depth = _nest(start, end, skip, threads)
    ref_parent, ref_depth = reference(start.tolist(), end.tolist(), skip.tolist(),
                                      threads.tolist())
    assert parent.tolist() == ref_parent
    assert depth.tolist() == ref_depth
