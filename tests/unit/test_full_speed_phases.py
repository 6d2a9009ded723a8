"""The time by phase of the full-speed steps (reports/full_speed_phases.py): backward, the
optimizer and the data wait timed in each step, the rest forward and the script's own."""

from __future__ import annotations

import pytest

from dsprof.reports.full_speed_phases import full_speed_phases
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import MS, steps

RUN = {"source": "run", "target": {"kind": "script", "name": "train.py", "argv": ["train.py"]}}


def _run(n: int = 20, backward: float | None = 5.0, optimizer: float | None = 1.0,
         gpu: bool = False, meta: dict | None = None) -> Run:
    cols = {"backward_ns": [None if backward is None else int(backward * MS)] * n,
            "optimizer_ns": [None if optimizer is None else int(optimizer * MS)] * n,
            "data_wait_ns": [int(0.5 * MS)] * n, "profiled": [False] * n}
    head = dict(meta if meta is not None else RUN)
    if gpu:
        head["devices"] = {"0": {"kind": "cuda", "name": "NVIDIA H100", "index": 0}}
    return Run.from_tables(meta=head, steps=steps([300.0] + [10.0] * (n - 1), **cols))


def test_each_phase_is_its_mean_a_step_and_the_rest_is_forward():
    phases, n = full_speed_phases(_run())
    by = {p.phase: p for p in phases}
    assert n >= 15  # the counted steps, setup left out
    assert by["backward"].ms == pytest.approx(5.0) and by["backward"].percent == pytest.approx(50)
    assert by["optimizer"].ms == pytest.approx(1.0) and by["data"].ms == pytest.approx(0.5)
    assert by["forward and the rest"].ms == pytest.approx(3.5)
    assert sum(p.percent for p in phases) == pytest.approx(100)


@pytest.mark.parametrize("case", ["gpu", "import", "untimed", "closure", "short"])
def test_no_split_where_the_phases_were_not_timed_or_are_the_hosts(case):
    run = {"gpu": lambda: _run(gpu=True),
           "import": lambda: _run(meta={"source": "import"}),
           "untimed": lambda: _run(backward=None),
           # a closure optimizer's step holds forward and backward: no optimizer phase
           "closure": lambda: _run(optimizer=None),
           # one step after setup: "none ran at full speed", so no split of one either
           "short": lambda: _run(n=2)}[case]()
    assert full_speed_phases(run) == ([], 0)
