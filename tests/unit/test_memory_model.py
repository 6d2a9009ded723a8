"""The peak timeline model shared by the checkpointing and batch-size analyzers."""

from __future__ import annotations

import numpy as np

from dsprof.analyzers.batch_size import largest_batch, peak_at
from dsprof.metrics.memory.model import (
    GPU_MARGIN,
    CheckpointTimeline,
    ModuleWindow,
    PeakTimeline,
    memory_budget,
)


def _timeline() -> PeakTimeline:
    ts = np.arange(10, dtype=np.int64) * 100
    fixed = np.full(10, 50, np.int64)
    scaled = np.array([0, 10, 20, 30, 40, 40, 30, 20, 10, 0], np.int64)
    return PeakTimeline(0, 3, 0, ts, fixed, scaled, {})


def test_checkpointed_modules_free_their_bytes_inside_their_windows_only():
    # GIVEN two modules whose windows (forward end .. backward start) overlap at points 4-5
    t = _timeline()
    windows = [ModuleWindow("M.a", 15, 0.1, 200, 600), ModuleWindow("M.b", 5, 0.1, 400, 750)]
    model = CheckpointTimeline(t, windows)
    # THEN each removes its bytes from the points in [fwd_end, bwd_start)
    assert model.reduction([0]).tolist() == [0, 0, 15, 15, 15, 15, 0, 0, 0, 0]
    assert model.reduction([0, 1]).tolist() == [0, 0, 15, 15, 20, 20, 5, 5, 0, 0]
    # the peak (90 at points 4-5) falls to 80 with M.a (now at point 6, after its window)
    # and to 75 with both
    assert t.peak == 90
    assert model.peak_with([0]) == 80
    assert model.peaks([[], [0, 1]]) == [90, 75]
    # at twice the batch the scaled bytes (and what checkpointing frees) double
    assert model.peak_with([0, 1], scale=2.0) == 50 + 2 * max(
        s - r for s, r in zip(t.scaled, model.reduction([0, 1]), strict=True))


def test_largest_batch_is_set_by_the_tightest_point():
    fixed = np.array([10, 20, 60])
    scaled = np.array([30, 10, 0])
    # (100 - 10) / 30 x 10 = 30 at point 0; (100 - 20) / 10 x 10 = 80 at point 1
    assert largest_batch(fixed, scaled, 10, 100) == (30, 0)
    assert peak_at(fixed, scaled, 10, 30) == 100
    assert peak_at(fixed, scaled, 10, 31) > 100
    assert largest_batch(fixed, scaled, 10, 60)[0] == 0  # the fixed part alone fills it


def test_budget_from_flag_then_gpu_then_none():
    gpu = {"devices": {"0": {"kind": "cuda", "name": "H100", "total_memory": 80 * 2**30}}}
    cpu = {"devices": {"0": {"kind": "cpu", "total_memory": 64 * 2**30}}}
    assert memory_budget({**gpu, "settings": {"memory_budget": 1000}}).bytes == 1000
    assert memory_budget(gpu).bytes == int(80 * 2**30 * (1 - GPU_MARGIN))
    assert memory_budget(cpu) is None
