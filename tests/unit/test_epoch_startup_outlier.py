"""A DataLoader with spawn workers and ``persistent_workers=False`` starts its workers at every
epoch: the epoch's first step waits seconds for its first batch, off the CPU. That wait is the
script's data loading, not "noise on this machine" (a 3-epoch spawn loader under dsprof run,
4 Dec: step 12, 4,694 ms against a 13 ms median, data wait +3,482 ms, was read as noise)."""

from __future__ import annotations

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.unit.test_noise import make_run

# 18 steps, 6 an epoch; default window of make_run: warm-up 6, window 7-9, trace write 10.
# Epoch 2 starts at step 12: its workers start (spawn: torch imported again in each).
DURS = [4900.0, 74.0] + [4694.0 if s == 12 else 6.0 for s in range(2, 18)]
CPU = [1120.0, 10.0] + [10.0 if s == 12 else 5.0 for s in range(2, 18)]
WAIT = [0.0, 0.0] + [3482.0 if s == 12 else 0.5 for s in range(2, 18)]


def test_an_epochs_worker_startup_is_a_data_wait_not_noise(tmp_path):
    with load(make_run(tmp_path / "r", DURS, cpu_ms=CPU, data_wait_ms=WAIT)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the slow step is the data loading's, with the DataLoader fix, not the machine's
    assert f.kind != "steps.noise" and "off the CPU" not in f.title, f.title
    (e,) = [e for e in f.evidence if e.step == 12]
    assert "data wait +3481.5 ms" in e.text
    assert "data (1)" in f.explanation and "waiting" not in f.explanation
    # AND no saving of its own: waits for data are the input pipeline's to price
    assert f.saving_s == 0 and "input pipeline" in f.fix


def test_a_step_that_waited_off_the_cpu_beyond_its_data_wait_is_still_waiting(tmp_path):
    # GIVEN the same step, but its data wait explains little of its time off the CPU
    wait = [w if i != 12 else 200.0 for i, w in enumerate(WAIT)]
    with load(make_run(tmp_path / "r", DURS, cpu_ms=CPU, data_wait_ms=wait)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the rest of the wait is still read as off the CPU
    assert "off the CPU" in f.title, f.title
