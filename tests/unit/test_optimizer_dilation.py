"""The optimizer loop's full-speed time: at most its profiled span scaled by how much the
profiler slowed the whole step (full-speed over profiled step time)."""

from __future__ import annotations

import pytest

from dsprof.analyzers.fusion_optimizer import profiler_dilation
from dsprof.analyzers.registry import Context
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import SCRIPT, steps


def run_with(profiled_ms: float, steady_ms: float) -> Run:
    durs = [50, 20] + [steady_ms] * 3 + [profiled_ms] * 2 + [steady_ms] * 8
    profiled = [i in (5, 6) for i in range(len(durs))]
    disturbed = ["setup", "first_call", None, None, "warmup", "window", "window",
                 "trace_write"] + [None] * 7
    return Run.from_tables(meta={**SCRIPT, "source": "run"},
                           steps=steps(durs, rank=[0] * len(durs)) | {
                               "profiled": profiled, "disturbed_by": disturbed})


def test_the_dilation_is_full_speed_over_profiled_step_time():
    ctx = Context(run_with(profiled_ms=10, steady_ms=4))
    if ctx.noise is None:
        pytest.skip("this in-memory run has no steady steps under the facts rule")
    assert profiler_dilation(ctx) == pytest.approx(0.4)
    # a profiled step faster than full speed (noise) never scales the span up
    assert profiler_dilation(Context(run_with(profiled_ms=3, steady_ms=4))) == 1.0
