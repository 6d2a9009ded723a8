"""The verdict of benchmarks/advice.py on two interleaved arms (benchmarks/advice_judge.py).

Arms are read from real run directories (a real ``steps`` Parquet table, written through the
ingest's schema by tests/unit/test_noise.py's ``make_run``); only the step times are chosen."""

from __future__ import annotations

import random
import statistics

import pytest

from benchmarks.advice_judge import WHY_CPU, WHY_WALL, Arm, judge, read_arm
from tests.unit.test_noise import make_run

MS = 1e-3


def _steps(median_ms: float, spread_ms: float, n: int = 30, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [median_ms + rng.uniform(-spread_ms, spread_ms) for _ in range(n)]


def _arm(wall_ms: list[float], cpu_ms: list[float] | None = None) -> Arm:
    return Arm([w * MS for w in wall_ms], [c * MS for c in (cpu_ms or [])])


def test_read_arm_pools_the_steady_steps_of_every_round(tmp_path):
    # GIVEN two rounds' runs of 20 steps (window 7-9), wall 10 ms and CPU 6 ms a step
    runs = [make_run(tmp_path / f"r{k}", [10.0] * 20, cpu_ms=[6.0] * 20) for k in range(2)]
    # WHEN the arm is read
    arm = read_arm(runs)
    # THEN both runs' steady steps are pooled (setup, first call, window and the trace write
    # left out), with their CPU times
    assert len(arm.wall) == len(arm.cpu) > 20
    assert len(arm.wall) < 40
    assert arm.wall[0] == pytest.approx(0.010) and arm.cpu[0] == pytest.approx(0.006)


def test_work_removing_fix_is_judged_on_cpu_time_not_the_swinging_wall():
    # GIVEN a fusion fix that saves 2 ms of the thread's CPU time (20 -> 18 ms) while the
    # wall time, which holds the thread's waits for a core, swings by 30 ms between steps
    base = _arm(_steps(40, 30, seed=1), _steps(20, 0.2, seed=2))
    fixed = _arm(_steps(38, 30, seed=3), _steps(18, 0.2, seed=4))
    # WHEN a prediction of 4 ms of wall (about 10 % of the step) is judged
    j = judge("fusion.hand_gelu", True, 4 * MS, base, fixed)
    # THEN the verdict is on CPU time, the prediction taken as the same share of its CPU time
    assert j.metric == "cpu" and j.why == WHY_CPU
    share = 4 * MS / statistics.median(base.wall)
    assert j.predicted_saving_s == pytest.approx(share * j.baseline_s)
    assert j.measured_saving_s == pytest.approx(2 * MS, abs=0.3 * MS)
    assert j.verdict == "within 25 %"


def test_wait_removing_fix_is_judged_on_wall_time():
    # GIVEN a DataLoader fix: wall 50 -> 10 ms while the thread's CPU time stays at 5 ms
    base = _arm(_steps(50, 1), _steps(5, 0.1))
    fixed = _arm(_steps(10, 1, seed=5), _steps(5, 0.1, seed=6))
    j = judge("input.dataloader_wait", True, 38 * MS, base, fixed)
    # THEN wall time decides: 40 ms measured against 38 predicted
    assert j.metric == "wall" and j.why == WHY_WALL
    assert j.verdict == "within 25 %"


def test_a_claim_neither_arm_can_resolve_is_inside_the_noise():
    # GIVEN arms 5 ms apart in spread, no difference, and a 0.3 ms prediction
    base, fixed = _arm(_steps(20, 5, seed=7)), _arm(_steps(20, 5, seed=8))
    j = judge("input.dataloader_wait", True, 0.3 * MS, base, fixed)
    # THEN neither change can be told from zero
    assert j.predicted_saving_s < j.band_s and abs(j.measured_saving_s) < j.band_s
    assert j.verdict == "inside the noise"


def test_a_large_claim_that_did_not_happen_is_off_not_noise():
    # GIVEN quiet arms (band well under 1 ms) with no change, and a 10 ms prediction
    base, fixed = _arm(_steps(20, 0.2, seed=9)), _arm(_steps(20, 0.2, seed=10))
    j = judge("input.dataloader_wait", True, 10 * MS, base, fixed)
    # THEN the claim is OFF: these arms would have seen 10 ms
    assert j.verdict.startswith("OFF -")
    assert not j.slower


def test_slower_only_beyond_the_band():
    # GIVEN a fixed arm 0.5 ms slower in arms whose band is ~2 ms
    noisy_b, noisy_f = _arm(_steps(20, 4, seed=11)), _arm(_steps(20.5, 4, seed=12))
    assert not judge("input.dataloader_wait", True, 0.1 * MS, noisy_b, noisy_f).slower
    # AND one 5 ms slower in quiet arms
    quiet_b, quiet_f = _arm(_steps(20, 0.2, seed=13)), _arm(_steps(25, 0.2, seed=14))
    j = judge("input.dataloader_wait", True, 1 * MS, quiet_b, quiet_f)
    # THEN only the second is SLOWER
    assert j.slower and j.verdict.endswith(", SLOWER")


def test_unranked_finding_is_outside_the_list_and_without_cpu_falls_back_to_wall():
    base, fixed = _arm(_steps(20, 0.2)), _arm(_steps(18, 0.2, seed=15))
    j = judge("fusion.optimizer", False, 2 * MS, base, fixed)
    assert j.verdict == "outside the ranked list"
    assert j.metric == "wall"  # no CPU times recorded
    assert judge("fusion.optimizer", True, 2 * MS, _arm([20.0]), fixed) is None
