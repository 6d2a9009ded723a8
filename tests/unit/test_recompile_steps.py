"""A step in which torch.compile compiled, and the step after it (the new graph's first run),
are not the script's steady speed (``run.facts``). A compiled loop whose input shape changed
every 10 steps recompiled in steps 30, 40 and 50; steps 31, 41 and 51 ran 3.3-4.8 ms against
1.5-2.2 ms (plain too), and were "4 of 49 steps are outliers ... saves 0.174 ms/step (7%)",
ranked first. Synthetic tables of that shape."""

from __future__ import annotations

from dsprof.analyzers.registry import analyze
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import MS, steps

RUN = {"source": "run", "target": {"kind": "script", "name": "train.py", "argv": ["train.py"]}}


def _run() -> Run:
    n = 60
    durs = [1.8 + (0.05 if i % 2 else -0.05) for i in range(n)]
    durs[0], durs[1] = 900.0, 3200.0  # setup, the first compile
    compiled = [0] * n
    compiled[1] = int(3000 * MS)
    for s in (30, 40, 50):  # recompiles for new shapes, then each new graph's first run
        durs[s], compiled[s] = 3200.0, int(3000 * MS)
        durs[s + 1] = 4.2
    return Run.from_tables(meta=RUN, steps={
        **steps(durs, cpu_ns=[int(d * MS) for d in durs], compile_ns=compiled),
        "profiled": [False] * n})


def test_the_step_after_a_recompile_is_not_a_steady_step():
    run = _run()
    counted = {s for _, s, _ in run.facts.step.counted}
    assert {30, 31, 40, 41, 50, 51}.isdisjoint(counted) and {29, 32, 52} <= counted
    # THEN no outlier is made of the new graphs' first runs
    out = analyze(run, only=("step_outliers",), write=False)
    assert not out.failed, out.failed
    assert [f for f in out.findings if f.saving_s] == [], [f.title for f in out.findings]
