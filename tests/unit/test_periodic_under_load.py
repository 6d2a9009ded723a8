"""Periodic evaluation on a loaded machine: the slow steps at a fixed stride are periodic work,
not "off the CPU", even when a noise outlier lands between them and the profiler's window
hides one of them (examples/periodic_eval.py --steps 16 --eval-every 4 under a busy loop on
the other core measured exactly this: slow steps 3, 11, 14, 15, step 7 in the window)."""

from __future__ import annotations

from dsprof.analyzers.registry import analyze
from dsprof.analyzers.step_period import period_of as _period
from dsprof.run import load
from tests.unit.test_noise import make_run

# 17 steps; the default window of make_run: warm-up 6, window 7-9, trace write 10. Steady
# steps: 2-5 and 11-16. The evaluation runs in steps 3, 7, 11 and 15 (7 in the window).
WALL = {3: 75.0, 7: 110.0, 11: 110.4, 14: 24.3, 15: 109.1}
# Under load every step waits for a core about as long as it computes: the evaluation steps
# computed ~45 ms more and waited longer too; step 14 computed nothing more and only waited.
CPU = {3: 50.0, 7: 50.0, 11: 48.0, 14: 3.0, 15: 50.0}


def _steps() -> tuple[list[float], list[float]]:
    durs = [200.0, 40.0] + [WALL.get(s, 6.0) for s in range(2, 17)]
    cpu = [200.0, 40.0] + [CPU.get(s, 3.0) for s in range(2, 17)]
    return durs, cpu


def test_a_stride_hidden_between_neighbours_is_found():
    steady = {2, 3, 4, 5, *range(11, 17)}
    # neighbouring gaps are 8, 3 and 1: the stride 4 is only the gap 11 -> 15
    assert _period([3, 11, 14, 15], 2, 16, present=steady) == (4, 3)
    # AND three outliers with no stride in common stay unpatterned
    assert _period([3, 12, 14], 2, 16, present=steady) is None


def test_periodic_evaluation_under_load_is_periodic_not_noise(tmp_path):
    durs, cpu = _steps()
    with load(make_run(tmp_path / "r", durs, cpu_ms=cpu)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the evaluation steps are named periodic work with their stride, at no saving
    assert f.kind == "steps.periodic", f.title
    assert f.data["period"] == 4 and f.saving_s == 0
    assert "Every 4 steps" in f.title and "off the CPU" not in f.title
    # AND each evaluation step's evidence says it did more work, beside what it waited
    by_step = {e.step: e.text for e in f.evidence}
    for step in (3, 11, 15):
        assert "thread CPU +" in by_step[step] and "(more work)" in by_step[step]
    assert "more work" not in by_step[14]  # the noise outlier only waited
    # AND the periodic steps are the stride's alone; the noise outlier is listed apart
    assert f.data["steps"] == [3, 11, 15] and f.data["other_outliers"] == [14]


def test_steps_at_the_same_stride_that_only_waited_stay_noise(tmp_path):
    # GIVEN the same slow steps at the same stride, but none computed more: they only waited
    durs, cpu = _steps()
    for step in (3, 11, 15):
        cpu[step] = 3.0
    with load(make_run(tmp_path / "r", durs, cpu_ms=cpu)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the stride alone does not make them the script's work: off the CPU, noise
    assert f.kind == "steps.noise" and "off the CPU" in f.title and f.saving_s == 0


# A PPO-style loop under load (tests: /tmp sweep of 4 Dec): 96 minibatch updates of ~1.5 ms; each
# rollout (256 environment steps, each a forward under no_grad) lands in the first update of
# every 16 and takes ~95 ms, almost all of it computing; between them 15 updates waited ~4 ms
# for a core. The rollouts are 5 of 20 outliers but nearly all of their excess.
ROLLOUT = {16: 94.6, 32: 81.8, 48: 143.4, 64: 63.8, 80: 128.4}
WAITED = (3, 5, 19, 21, 23, 27, 34, 37, 39, 42, 44, 82, 84, 87, 89)


def _ppo_steps() -> tuple[list[float], list[float]]:
    durs = [1360.0, 630.0] + [ROLLOUT.get(s, 5.8 if s in WAITED else 1.5) for s in range(2, 96)]
    cpu = [1300.0, 600.0] + [ROLLOUT[s] - 5.0 if s in ROLLOUT else 1.5 for s in range(2, 96)]
    return durs, cpu


def test_long_periodic_work_among_many_small_waits_is_periodic(tmp_path):
    # GIVEN a few long rollouts at a stride of 16 and three times as many short waits
    durs, cpu = _ppo_steps()
    with load(make_run(tmp_path / "r", durs, cpu_ms=cpu)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the rollouts are the script's periodic work (they were "noise on this machine")
    assert f.kind == "steps.periodic", f.title
    assert f.data["period"] == 16 and f.saving_s == 0
    assert "off the CPU" not in f.title
    # AND the cost in the title is the rollouts' own excess, not the waits' as well
    med = 1.5
    own = sum(d - med for d in ROLLOUT.values()) / (len(durs) - 7)  # 7 disturbed steps
    assert f"{own:.3g} ms" in f.title, f.title


def test_the_stride_is_weighed_by_excess_only_when_it_is_given():
    slow = sorted([*ROLLOUT, *WAITED])
    steady = set(range(2, 6)) | set(range(11, 96))
    # by count alone 5 of 20 outliers are no pattern; by their excess they are
    assert _period(slow, 2, 95, present=steady) is None
    excess = {s: ROLLOUT.get(s, 5.8) - 1.5 for s in slow}
    assert _period(slow, 2, 95, present=steady, excess=excess) == (16, 0)
    # AND short waits at a stride do not become a pattern by excess: most excess is elsewhere
    excess_flat = {s: 4.3 for s in slow}
    assert _period(slow, 2, 95, present=steady, excess=excess_flat) is None
