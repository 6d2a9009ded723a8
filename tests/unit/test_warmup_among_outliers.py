"""A warm-up followed, later in the run, by other outliers: the warm-up is set aside, not
priced. Measured: a ``torch.jit.script`` model trained 40 steps under dsprof, steps 2-4
(48.2, 2.5, 2.1 ms: TorchScript's profiling executor optimizes the graphs at their second
call) and step 11 (2.25 ms) slow against a 1.4 ms median, was "4 of 33 steps are outliers
... saves 1.5 ms/step (52%)", ranked high."""

from __future__ import annotations

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.unit.test_noise import make_run

# 30 steps; make_run's window: warm-up 6, window 7-9, trace write 10. Steady: 2-5, 11-29.
JIT = {2: 48.2, 3: 2.5, 4: 2.1, 11: 2.25}


def _durs(slow: dict[int, float], normal: float = 1.4) -> list[float]:
    return [1100.0, 40.0] + [slow.get(s, normal + 0.01 * (s % 3)) for s in range(2, 30)]


def test_a_warm_up_lends_no_saving_to_a_later_outlier(tmp_path):
    # GIVEN a TorchScript run: its first steady steps slow, then the run settles, and one
    # step after the profiler's window a little slow too
    durs = _durs(JIT)
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the verdict is on step 11 alone: its own excess, not the warm-up's 50 ms
    assert f.data["steps"] == [11], f.title
    assert f.saving_s * 1e3 < 0.05, f.saving_s
    # AND the warm-up is named as left out, at no saving
    text = " ".join(f.explanation.split())
    assert "Left out as warm-up: steps 2-4" in text and "no saving" in text


def test_warm_up_alone_is_still_the_warm_up_verdict(tmp_path):
    # GIVEN the same run without the later outlier
    durs = _durs({k: v for k, v in JIT.items() if k != 11})
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN it is one warm-up, paid once
    assert f.kind == "steps.warmup" and f.saving_s == 0 and "Steps 2-4" in f.title


def test_a_first_step_on_the_outliers_stride_is_periodic_work_not_warm_up(tmp_path):
    # GIVEN an evaluation every 5 steps whose first one lands in the first steady step
    slow = {s: 30.0 for s in (2, 12, 17, 22, 27)}
    durs = _durs(slow)
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN step 2 stays one of the periodic steps
    assert f.kind == "steps.periodic" and 2 in f.data["steps"], (f.kind, f.data)
