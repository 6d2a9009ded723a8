"""pipeline._events_kept, the share of the profiler's numbered events a trace holds (under 0.9:
the trace was down-sampled): the bitmap over the indices' range gives what a count of the
distinct indices gives, and indices past int64 or spread far apart still count."""

from __future__ import annotations

import numpy as np

from dsprof.ingest.pipeline import _events_kept


def _by_set(idx: list[int]) -> float:
    return len(set(idx)) / (max(idx) - min(idx) + 1)


def test_bitmap_and_distinct_count_agree():
    rng = np.random.default_rng(0)
    for keep in (1.0, 0.5, 0.1):
        idx = np.flatnonzero(rng.random(50_000) < keep) + 123_456
        idx = np.concatenate([idx, idx[:100]])  # a repeated index counts once
        rng.shuffle(idx)
        assert _events_kept(idx) == _by_set(idx.tolist())


def test_far_apart_and_huge_indices():
    far = np.array([0, 5, 10**15], np.int64)  # a range no bitmap should be built for
    assert _events_kept(far) == _by_set(far.tolist())
    huge = np.array([2**70, 2**70 + 2, 2**70 + 2], object)  # past int64: kept as objects
    assert _events_kept(huge) == 2 / 3
    assert _events_kept(np.array([7], np.int64)) is None
