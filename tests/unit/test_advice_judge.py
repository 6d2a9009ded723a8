"""The verdict of benchmarks/advice.py on two arms run in rounds (benchmarks/advice_judge.py).

Arms are read from real run directories (a real ``steps`` Parquet table, written through the
ingest's schema by tests/unit/test_noise.py's ``make_run``); only the step times are chosen."""

from __future__ import annotations

import random
import statistics

import pytest

from benchmarks.advice_judge import (
    WHY_CPU,
    WHY_WALL,
    Arm,
    decision,
    judge,
    needs_more_rounds,
    percent,
    read_arm,
)
from tests.unit.test_noise import make_run

MS = 1e-3
WAIT = "input.dataloader_wait"  # a kind judged on wall time


def _steps(median_ms: float, spread_ms: float, n: int = 30, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [median_ms + rng.uniform(-spread_ms, spread_ms) for _ in range(n)]


def _arm(wall_ms: list[float], cpu_ms: list[float] | None = None) -> Arm:
    """An arm of one run."""
    return Arm((tuple(w * MS for w in wall_ms),), (tuple(c * MS for c in (cpu_ms or [])),))


def _quiet_run(median_ms: float, spread_ms: float = 0.02, n: int = 30) -> tuple[float, ...]:
    """``n`` steps spread evenly about ``median_ms`` (whose median it stays)."""
    return tuple((median_ms + spread_ms * ((i % 5) - 2) / 2) * MS for i in range(n))


def _rounds(base_ms: list[float], fixed_ms: list[float]) -> tuple[Arm, Arm]:
    """Two arms of quiet runs, run ``k``'s steps about ``base_ms[k]`` / ``fixed_ms[k]``."""
    base = tuple(_quiet_run(m) for m in base_ms)
    fixed = tuple(_quiet_run(m) for m in fixed_ms)
    return Arm(base, ((),) * len(base)), Arm(fixed, ((),) * len(fixed))


def test_read_arm_keeps_each_round_apart(tmp_path):
    # GIVEN two rounds' runs of 20 steps (window 7-9), wall 10 and 11 ms, CPU 6 ms a step
    runs = [make_run(tmp_path / f"r{k}", [10.0 + k] * 20, cpu_ms=[6.0] * 20) for k in range(2)]
    # WHEN the arm is read
    arm = read_arm(runs)
    # THEN each run's steady steps (setup, first call, window and the trace write left out)
    # are kept apart, with their CPU times, and pooled on demand
    assert len(arm.wall_runs) == len(arm.cpu_runs) == 2
    assert 10 < len(arm.wall_runs[0]) < 20 and len(arm.cpu_runs[1]) == len(arm.wall_runs[1])
    assert arm.wall_runs[0] == pytest.approx([0.010] * len(arm.wall_runs[0]))
    assert arm.wall_runs[1] == pytest.approx([0.011] * len(arm.wall_runs[1]))
    assert arm.cpu[0] == pytest.approx(0.006) and len(arm.wall) == len(arm.cpu)


def test_an_op_time_saving_judged_on_cpu_time_is_taken_as_a_share_of_it():
    # GIVEN a fusion fix that saves 2 ms of the thread's CPU time (20 -> 18 ms) while the
    # wall time, which holds the thread's waits for a core, swings by 30 ms between steps
    base = _arm(_steps(40, 30, seed=1), _steps(20, 0.2, seed=2))
    fixed = _arm(_steps(38, 30, seed=3), _steps(18, 0.2, seed=4))
    # WHEN a prediction built from op times, 4 ms of wall (about 10 % of the step), is judged
    j = judge("fusion.hand_gelu", True, 4 * MS, base, fixed)
    # THEN the verdict is on CPU time, the prediction taken as the same share of its CPU time
    assert j.metric == "cpu" and j.why == WHY_CPU and j.scaled
    share = 4 * MS / statistics.median(base.wall)
    assert j.predicted_saving_s == pytest.approx(share * j.baseline_s)
    assert j.measured_saving_s == pytest.approx(2 * MS, abs=0.3 * MS)
    assert j.verdict == "within 25 %, confirmed"


def test_a_saving_priced_in_thread_cpu_time_is_not_scaled():
    # GIVEN the fused optimizer's saving, priced in the thread's CPU time: 2 ms, on a loaded
    # machine whose wall step (40 ms) is twice its CPU step (20 ms)
    base = _arm(_steps(40, 30, seed=1), _steps(20, 0.2, seed=2))
    fixed = _arm(_steps(38, 30, seed=3), _steps(18, 0.2, seed=4))
    j = judge("fusion.optimizer", True, 2 * MS, base, fixed, saving_clock="thread_cpu")
    # THEN it is compared with the CPU time saved as it is, not halved by cpu/wall
    assert j.metric == "cpu" and not j.scaled
    assert j.predicted_saving_s == pytest.approx(2 * MS)
    assert j.verdict == "within 25 %, confirmed"
    # (scaled as an op-time saving it would have been about 1 ms, and OFF)
    op_time = judge("fusion.optimizer", True, 2 * MS, base, fixed)
    assert op_time.predicted_saving_s < 1.2 * MS and op_time.verdict.startswith("OFF")


def test_wait_removing_fix_is_judged_on_wall_time():
    # GIVEN a DataLoader fix: wall 50 -> 10 ms while the thread's CPU time stays at 5 ms
    base = _arm(_steps(50, 1), _steps(5, 0.1))
    fixed = _arm(_steps(10, 1, seed=5), _steps(5, 0.1, seed=6))
    j = judge(WAIT, True, 38 * MS, base, fixed)
    # THEN wall time decides, unscaled: 40 ms measured against 38 predicted
    assert j.metric == "wall" and j.why == WHY_WALL and not j.scaled
    assert j.verdict == "within 25 %, confirmed"


def test_the_paired_band_sees_a_drift_between_rounds_that_the_step_band_misses():
    # GIVEN four rounds of quiet runs (steps within 0.02 ms) whose change swings from round
    # to round with the machine's load: 0.10, 0.70, 0.15, 0.65 ms, mean 0.40 ms
    base, fixed = _rounds([20.0] * 4, [19.9, 19.3, 19.85, 19.35])
    # WHEN a 0.40 ms prediction is judged after the last round
    j = judge(WAIT, True, 0.4 * MS, base, fixed)
    # THEN the change is the rounds' mean, and its band is Student's t(0.975, 3) = 3.182
    # times their sd over sqrt(4): about 0.5 ms, where the pooled steps' band is under 0.1
    diffs = [0.10, 0.70, 0.15, 0.65]
    assert j.rounds == 4
    assert j.measured_saving_s == pytest.approx(0.4 * MS)
    assert j.paired_band_s == pytest.approx(3.182 * statistics.stdev(diffs) / 2 * MS, rel=1e-3)
    assert j.step_band_s < 0.1 * MS < 0.4 * MS < j.band_s
    # AND a measurement that happens to land on the prediction is not confirmed: the interval
    # holds changes far outside 25 % of it
    assert j.verdict == "within 25 % (interval wider)" and not j.decided


def test_the_band_is_never_narrower_than_the_step_band():
    # GIVEN rounds that agree exactly (sd of the changes 0) in steps spread by 2 ms
    base = Arm(tuple(tuple(_steps(20, 2, seed=k)) for k in range(3)), ((),) * 3)
    fixed = Arm(tuple(tuple(x - 0.4 * MS for x in run) for run in base.wall_runs), ((),) * 3)
    j = judge(WAIT, True, 0.4 * MS, base, fixed)
    # THEN the paired band is 0, and the step-to-step spread's band stands
    assert j.paired_band_s == pytest.approx(0.0, abs=1e-12)
    assert j.band_s == j.step_band_s > 0.3 * MS


def test_consistent_rounds_decide_within_and_stop():
    # GIVEN three rounds that changed the step by 0.40, 0.42 and 0.38 ms
    base, fixed = _rounds([20.0] * 3, [19.6, 19.58, 19.62])
    j = judge(WAIT, True, 0.4 * MS, base, fixed, last_round=False)
    # THEN the whole interval (0.40 +- 0.05 ms) is within 25 % of 0.40: decided, no more rounds
    assert j.interval_s[0] > 0.3 * MS and j.interval_s[1] < 0.5 * MS
    assert j.verdict == "within 25 %, confirmed" and j.decided
    assert not needs_more_rounds(j, 3, 6)


def test_rounds_far_from_the_prediction_decide_off_and_stop():
    # GIVEN three rounds that changed the step by about 0.10 ms, against a 0.40 ms prediction
    base, fixed = _rounds([20.0] * 3, [19.9, 19.89, 19.91])
    j = judge(WAIT, True, 0.4 * MS, base, fixed, last_round=False)
    # THEN the whole interval is under 0.30 ms: OFF, decided without more rounds
    assert j.verdict == "OFF -75%" and j.decided
    assert not needs_more_rounds(j, 3, 6)


def test_an_undecided_interval_runs_more_rounds_until_the_last():
    # GIVEN rounds whose interval (about 0.26 +- 0.07 ms) holds 0.30, within 25 % of a 0.40
    # ms prediction, and 0.20, outside it; the prediction itself is outside the interval
    base, fixed = _rounds([20.0] * 3, [19.74, 19.71, 19.77])
    j = judge(WAIT, True, 0.4 * MS, base, fixed, last_round=False)
    assert j.interval_s[0] < 0.3 * MS < j.interval_s[1] < 0.4 * MS
    # THEN before the last round it is undecided, and another round is run while any is left
    assert j.verdict == "undecided" and not j.decided
    assert needs_more_rounds(j, 3, 6) and not needs_more_rounds(j, 6, 6)
    # AND after the last round it is OFF: more than 25 % off, the prediction outside the
    # interval (were the prediction inside, it would be "inside the noise")
    last = judge(WAIT, True, 0.4 * MS, base, fixed)
    assert last.verdict.startswith("OFF -3") and last.decided


def test_decision_is_on_the_whole_interval():
    assert decision(1.0, 1.0, 0.2) == "within"
    assert decision(1.0, 1.0, 0.3) is None  # 0.7..1.3 holds values on both sides
    assert decision(1.0, 0.5, 0.2) == "off"  # 0.3..0.7, all under 0.75
    assert decision(1.0, 1.5, 0.2) == "off"
    assert decision(0.0, 0.5, 0.2) == "off"  # no prediction to be within


def test_an_unranked_finding_runs_no_extra_rounds():
    base, fixed = _rounds([20.0] * 2, [19.9, 19.3])
    j = judge("fusion.optimizer", False, 2 * MS, base, fixed, last_round=False)
    assert j.verdict == "outside the ranked list" and j.decided
    assert not needs_more_rounds(j, 2, 6)
    assert j.metric == "wall"  # no CPU times recorded
    assert judge("fusion.optimizer", True, 2 * MS, _arm([20.0]), fixed) is None


def test_slower_only_beyond_the_band():
    # GIVEN a fixed arm 0.5 ms slower in arms whose band is ~2 ms
    noisy_b, noisy_f = _arm(_steps(20, 4, seed=11)), _arm(_steps(20.5, 4, seed=12))
    assert not judge(WAIT, True, 0.1 * MS, noisy_b, noisy_f).slower
    # AND rounds 5 ms slower each, in quiet runs
    quiet_b, quiet_f = _rounds([20.0] * 3, [25.0, 25.1, 24.9])
    j = judge(WAIT, True, 1 * MS, quiet_b, quiet_f)
    # THEN only the second is SLOWER
    assert j.slower and j.verdict.endswith(", SLOWER")


def test_the_table_row_carries_the_clock_both_bands_the_rounds_and_each_pass(capsys):
    from benchmarks.advice import row
    from benchmarks.advice_passes import Measured, Pending, judgement
    from benchmarks.advice_table import print_table

    # GIVEN a ranked fused-optimizer finding priced in thread CPU time (0.40 ms, verify's
    # prediction), and four rounds whose change swings 0.10-0.70 ms, two in pass 0 and two in
    # pass 1
    f = {"kind": "fusion.optimizer", "id": "fusion-0000abcd", "title": "Use Adam(fused=True)",
         "severity": "low", "data": {"saving_clock": "thread_cpu"}}
    base, fixed = _rounds([20.4] * 4, [20.3, 19.7, 20.25, 19.75])
    p = Pending("corpus:gan", 0, f, 0.4 * MS, [], [], [], [])
    p.add(Measured(0.4 * MS, Arm(base.wall_runs[:2], base.cpu_runs[:2]),
                   Arm(fixed.wall_runs[:2], fixed.cpu_runs[:2])), 0)
    p.add(Measured(0.4 * MS, Arm(base.wall_runs[2:], base.cpu_runs[2:]),
                   Arm(fixed.wall_runs[2:], fixed.cpu_runs[2:])), 1)
    r = row(p, judgement(p, last_round=True), False)
    # THEN the row keeps both bands, the interval, the rounds and their passes, each pass's
    # mean change, and the prediction unscaled
    assert r["saving_clock"] == "thread_cpu" and not r["scaled"]
    assert r["predicted_saving_ms"] == pytest.approx(0.4)
    assert r["paired_band_ms"] > r["step_band_ms"] > 0 and r["rounds"] == 4
    assert r["round_pass"] == [0, 0, 1, 1]
    assert r["pass_changes_ms"] == pytest.approx([0.4, 0.4])
    assert r["interval_ms"][0] < 0.3 and r["interval_ms"][1] > 0.5
    assert r["verdict"] == "within 25 % (interval wider)" and not r["cut_short"]
    # AND the table prints them, and counts the row within 25 % but not as confirmed
    print_table([r], {}, {"corpus:gan": 60.0})
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("corpus:gan"))
    assert f"{r['paired_band_ms']:.2f}/{r['step_band_ms']:.2f}" in line
    assert "0.40|0.40" in line and " 4/2 " in line
    assert "within 25 % (interval wider)" in line
    assert "1/1 ranked findings within 25 % of the measured change (0 confirmed" in out
    assert "0 inside the noise" in out and "1/1 ranked measured in more than one pass" in out


def test_an_off_near_the_limit_prints_a_decimal():
    assert percent(-0.254) == "-25.4%" and percent(0.2549) == "+25.5%"
    assert percent(-0.27) == "-27%" and percent(0.12) == "+12%"


def test_a_ranked_verdict_is_not_decided_on_two_rounds():
    # GIVEN two rounds that agree closely, far from the prediction (a narrow band on one
    # degree of freedom: hf_t5 read "OFF -63 %" so once, and -3 % in the next sitting)
    base, fixed = _rounds([20.0] * 2, [19.9, 19.901])
    j = judge(WAIT, True, 0.4 * MS, base, fixed, last_round=False)
    assert j.decided
    # THEN a third round is run before the verdict stands, and none after it once decided
    assert needs_more_rounds(j, 2, 6) and not needs_more_rounds(j, 3, 6)
    assert not needs_more_rounds(j, 2, 2)  # no rounds left



# -- the fused optimizer: judged on the update, the whole step checked -------------------------

FUSED = "fusion.optimizer"


def _update_arms(update_ms: list[tuple[float, float]], step_ms: list[tuple[float, float]],
                 ) -> tuple[Arm, Arm]:
    """Two arms of quiet runs: round ``k``'s baseline and fix updates about
    ``update_ms[k]``, their whole steps' CPU time about ``step_ms[k]``."""
    def arm(i: int) -> Arm:
        cpu = tuple(_quiet_run(s[i]) for s in step_ms)
        return Arm(cpu, cpu, tuple(_quiet_run(u[i]) for u in update_ms))
    return arm(0), arm(1)


def test_read_arm_reads_the_update_time_of_the_steady_steps(tmp_path):
    # GIVEN a run whose steps spent 1.5 ms in optimizer.step(), one step with none recorded
    # (a closure), and an older run without the column's values
    update = [1.5] * 20
    update[15] = None
    runs = [make_run(tmp_path / "new", [10.0] * 20, cpu_ms=[6.0] * 20, optimizer_cpu_ms=update),
            make_run(tmp_path / "old", [10.0] * 20, cpu_ms=[6.0] * 20)]
    arm = read_arm(runs)
    # THEN the steady steps' update times are read per run, the unrecorded one left out
    assert len(arm.update_runs) == 2 and arm.update_runs[1] == ()
    assert len(arm.update_runs[0]) == len(arm.wall_runs[0]) - 1
    assert arm.update == pytest.approx([0.0015] * len(arm.update_runs[0]))


def test_the_fused_optimizer_is_judged_on_the_update_where_the_whole_step_drifts():
    # GIVEN four rounds whose update saves 0.50-0.56 ms each time, while the rest of the step
    # drifts by a millisecond from run to run (the whole step's change swings -0.6..+1.5 ms)
    base, fixed = _update_arms([(1.00, 0.47), (0.98, 0.46), (1.01, 0.45), (0.99, 0.48)],
                               [(7.8, 7.7), (7.6, 7.5), (8.2, 6.7), (7.2, 7.8)])
    j = judge(FUSED, True, 0.5 * MS, base, fixed, saving_clock="thread_cpu", last_round=True)
    # THEN the verdict is the update's, confirmed, and the whole step's change stands beside it
    assert j.metric == "update" and j.verdict == "within 25 %, confirmed"
    assert j.measured_saving_s == pytest.approx(0.53 * MS, rel=0.02)
    saved, band = j.whole_step
    assert saved == pytest.approx(0.275 * MS, rel=0.02) and band > 1 * MS and not j.slower
    # AND on the whole step's CPU time the same rounds decide nothing
    whole = judge("fusion.hand_gelu", True, 0.5 * MS, base, fixed, saving_clock="thread_cpu",
                  last_round=True)
    assert whole.metric == "cpu" and whole.verdict == "inside the noise"


def test_an_update_saved_while_the_whole_step_grew_is_slower():
    base, fixed = _update_arms([(1.0, 0.5)] * 3, [(7.0, 8.0), (7.1, 8.05), (7.0, 7.95)])
    j = judge(FUSED, True, 0.5 * MS, base, fixed, saving_clock="thread_cpu", last_round=True)
    assert j.metric == "update" and j.slower and j.verdict.endswith(", SLOWER")
    assert j.verdict.startswith("within 25 %, confirmed")  # the update's own verdict stays


def test_without_update_times_or_a_thread_cpu_price_the_whole_step_is_judged():
    base, fixed = _update_arms([(1.0, 0.5)] * 3, [(7.0, 6.5)] * 3)
    closure = (Arm(base.wall_runs, base.cpu_runs), Arm(fixed.wall_runs, fixed.cpu_runs))
    assert judge(FUSED, True, 0.5 * MS, *closure, saving_clock="thread_cpu").metric == "cpu"
    assert judge(FUSED, True, 0.5 * MS, base, fixed).metric == "cpu"  # an op-time saving
    assert judge(FUSED, True, 0.5 * MS, base, fixed).whole_step is None
