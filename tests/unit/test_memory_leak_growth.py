"""The leak analyzer's growth rule on live-byte series read from real runs."""

from __future__ import annotations

from dsprof.analyzers.memory_leak import _growth


def test_one_tensor_alive_across_one_boundary_is_no_growth():
    # the CPU timeline of a feature-extraction loop (4 KiB kept a step; its 1 MiB input alive
    # across boundary 23 only): the least-squares slope was 404 KiB a step
    assert _growth([21, 22, 23, 24], [1134592, 1138688, 2191360, 2195456]) is None


def test_steady_growth_above_noise_is_growth():
    # a buffer growing 512 KiB a step through the profiled boundaries 6-9
    slope = _growth([6, 7, 8, 9], [520, 524808, 1049096, 1573384])
    assert slope is not None and abs(slope - 524288) < 1
