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


def test_steps_at_the_same_stride_that_only_waited_stay_noise(tmp_path):
    # GIVEN the same slow steps at the same stride, but none computed more: they only waited
    durs, cpu = _steps()
    for step in (3, 11, 15):
        cpu[step] = 3.0
    with load(make_run(tmp_path / "r", durs, cpu_ms=cpu)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the stride alone does not make them the script's work: off the CPU, noise
    assert f.kind == "steps.noise" and "off the CPU" in f.title and f.saving_s == 0
