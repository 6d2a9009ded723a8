"""Steps that ran more of the script's own loop (an RL episode that lasted longer): named as
the work the script gave them, with the line that ran more often, never as a saving."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from dsprof.rundir import RunDir
from dsprof.schema import HOST_SYNCS
from tests.unit.test_noise import make_run

MS = 1_000_000


def _episodes(path: Path, moves: list[int], line_only_in_slow: bool = False) -> Path:
    """A REINFORCE-like run: each step one episode, 0.4 ms a move, one ``item()`` per move at
    reinforce.py:60 (the action read back); setup, first call and the window 7-9 first."""
    durs = [200.0, 40.0] + [0.4 * m for m in moves]
    make_run(path, durs, cpu_ms=durs)
    counts = [2, 2] + moves
    rows = {"rank": [0] * len(durs), "step": list(range(len(durs))),
            "call": ["item"] * len(durs), "site": ["reinforce.py:60"] * len(durs),
            "function": ["select_action"] * len(durs), "device": ["cpu"] * len(durs),
            "count": counts, "total_ns": [c * 1500 for c in counts],
            "max_ns": [3000] * len(durs), "caller": [None] * len(durs)}
    if line_only_in_slow:  # the slow steps' extra time is a line of their own instead
        rows["count"] = [2] * len(durs)
        rows["site"] = ["reinforce.py:60" if m < 300 or s < 2 else "evaluate.py:9"
                        for s, m in zip(range(len(durs)), [0, 0] + moves)]
    out = RunDir(path).table_dir("host_syncs")
    out.mkdir(parents=True)
    pq.write_table(HOST_SYNCS.build(rows), out / "rank0.parquet")
    return path


# episodes of 150-200 moves, and every so often (at no stride) one that lasted 500
MOVES = [180, 170, 190, 175, 185, 160, 200, 180, 170, 500, 175, 185, 190, 180, 500, 170,
         165, 180, 195, 175, 500, 185, 180, 170, 190, 180, 175, 500, 180, 185]


def test_longer_episodes_are_the_scripts_work_not_a_saving(tmp_path):
    # GIVEN REINFORCE's steps: the 500-move episodes run 2.7x the median
    with load(_episodes(tmp_path / "run", MOVES)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN they are more of the same work, the line that ran more named with its counts
    assert f.kind == "steps.more_iterations" and f.saving_s == 0 and f.severity == "info"
    assert "item() at reinforce.py:60 ran 500 times in them against 180 in a median step" \
        in f.title
    assert sorted(f.data["steps"]) == [2 + i for i, m in enumerate(MOVES) if m == 500]


def test_a_line_only_the_slow_steps_ran_is_still_their_extra_work(tmp_path):
    # GIVEN the same slow steps, whose time went to a line no other step ran instead
    with load(_episodes(tmp_path / "run", MOVES, line_only_in_slow=True)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the verdict is the extra work's, not more iterations of the usual line
    assert f.kind == "steps.extra_work"


def _logged_twice(path: Path, cpu_grew: bool) -> Path:
    """LightningCLI's fit (tests: /tmp/compat9 c2cli): steps of 8.2 ms, half of it on the CPU,
    one ``item()`` a step at Lightning's apply_func.py:134; step 19 read it twice and ran 14.6
    ms. ``cpu_grew``: its thread CPU grew by the extra time (more work), else it stayed at the
    median (the thread waited 10.3 ms for a CPU, the run's other steps ~4)."""
    durs = [200.0, 40.0] + [8.2 + 0.1 * (i % 3) for i in range(17)] + [14.6] + \
        [8.2 + 0.1 * (i % 3) for i in range(6)]
    cpu = [d / 2 for d in durs]
    slow = durs.index(14.6)
    cpu[slow] = 4.1 + (6.4 if cpu_grew else 0.0)
    make_run(path, durs, cpu_ms=cpu)
    counts = [1] * len(durs)
    counts[slow] = 2
    rows = {"rank": [0] * len(durs), "step": list(range(len(durs))),
            "call": ["item"] * len(durs),
            "site": ["lightning/fabric/utilities/apply_func.py:134"] * len(durs),
            "function": ["to_item"] * len(durs), "device": ["cpu"] * len(durs),
            "count": counts, "total_ns": [c * 1500 for c in counts],
            "max_ns": [3000] * len(durs), "caller": [None] * len(durs)}
    out = RunDir(path).table_dir("host_syncs")
    out.mkdir(parents=True)
    pq.write_table(HOST_SYNCS.build(rows), out / "rank0.parquet")
    return path


def test_a_slow_step_that_waited_for_a_cpu_is_not_more_iterations_for_a_second_read(tmp_path):
    # GIVEN a CPU run's slow step that read the logged loss twice against once, its thread's
    # CPU time at the median: the 6.4 ms over were off the CPU
    with load(_logged_twice(tmp_path / "run", cpu_grew=False)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the waiting is the verdict: the extra wall time was no work of the script's loop
    assert f.kind == "steps.noise", f.title
    assert "off the CPU" in f.title and "more of the same work" not in f.title
    # AND the same step with its CPU time grown by the extra is more of the script's loop
    with load(_logged_twice(tmp_path / "grew", cpu_grew=True)) as run:
        (grew,) = analyze(run, only=("step_outliers",), write=False).findings
    assert grew.kind == "steps.more_iterations", grew.title
