"""The straggler's margin over noise, on runs built in memory: a rank late by a steady amount is
named; a gap no larger than the ranks' step-to-step variation, or a delay in one step only, is
not (the real runs: tests/integration/test_straggler_runs.py)."""

from __future__ import annotations

from dsprof.analyzers.registry import analyze
from dsprof.analyzers.straggler import steadily_late
from dsprof.metrics.noise import rank_step_spread, small_sample_noise
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import MS, SCRIPT, table

STEP = 50  # ms


def two_ranks(late_ms: list[float], durs_ms: list[float] | None = None) -> Run:
    """Two ranks, one all-reduce per step; in step k rank 1 calls it ``late_ms[k]`` after
    rank 0 (negative: before). Both ranks' steps last ``durs_ms``."""
    durs = durs_ms or [STEP] * len(late_ms)
    starts = [sum(durs[:k]) for k in range(len(durs))]
    rows = []
    for step, (start, late) in enumerate(zip(starts, late_ms)):
        for rank in (0, 1):
            call = int((start + durs[step] / 2 + (late if rank == 1 else 0)) * MS)
            rows.append({"rank": rank, "step": step, "collective": "all_reduce",
                         "dtype": "float", "in_bytes": 1 << 20, "start_ns": call,
                         "dur_ns": 5 * MS, "call_ns": call, "source": "gloo"})
    steps = {"step": list(range(len(durs))) * 2, "rank": [0] * len(durs) + [1] * len(durs),
             "start_ns": [int(s * MS) for s in starts] * 2,
             "end_ns": [int((s + d) * MS) for s, d in zip(starts, durs)] * 2,
             "dur_ns": [int(d * MS) for d in durs] * 2, "profiled": [True] * 2 * len(durs)}
    return Run.from_tables(meta=SCRIPT, comms=table(*rows), steps=steps)


def stragglers(run: Run) -> list:
    return [f for f in analyze(run, write=False).findings if f.kind == "comm.straggler"]


def test_a_rank_late_by_the_same_amount_every_step_is_named_with_the_spread_it_beat():
    # GIVEN rank 1 arriving 10 ms late at every step, steps varying by about 1 ms
    run = two_ranks([10, 9, 11, 10], [50, 51, 49, 50])
    # THEN it is the straggler, and the explanation gives the spread it was compared with
    (f,) = stragglers(run)
    assert f.key == "rank 1" and abs(f.saving_s - 0.010) < 1e-3
    assert 0 < f.data["step_spread_s"] < 0.002 and "step-time spread" in f.explanation


def test_a_gap_within_the_ranks_step_to_step_variation_is_not_a_straggler():
    # GIVEN rank 1 last every step by ~4 ms, while every step's time varies by ~8 ms (a busy
    # machine): the gap is what that variation makes by itself
    run = two_ranks([4, 4.5, 3.5, 4], [45, 60, 42, 55])
    assert 1.5 * rank_step_spread(run)[1].sd_s > 0.004
    # THEN no straggler
    assert stragglers(run) == []


def test_a_delay_in_one_step_is_not_a_straggler():
    # GIVEN rank 1 late by 14 ms in one step and on time (just last, or first) in the others:
    # last at 3 of 4 collectives, 3.6 ms a step on average, with steady step times
    run = two_ranks([14, 0.2, 0.2, -0.5])
    # THEN the lateness is not steady step after step: no straggler
    assert stragglers(run) == []


def test_steadily_late_needs_two_steps_and_a_mean_over_two_standard_errors():
    assert not steadily_late([20 * MS])
    assert steadily_late([20 * MS, 19 * MS])
    assert not steadily_late([14 * MS, 0, 0, -MS // 2])
    assert not steadily_late([-5 * MS, -5 * MS])


def test_small_samples_use_the_sample_sd_not_the_mad():
    # the MAD of three values is the smallest distance between two of them
    three = small_sample_noise([10 * MS, 10 * MS + MS // 10, 20 * MS])
    assert three is not None and abs(three.sd_s - 0.00575) < 1e-4
    five = small_sample_noise([10 * MS] * 4 + [20 * MS])
    assert five is not None and five.sd_s == 0.0  # robust from five on: one outlier is ignored
    assert small_sample_noise([10 * MS]) is None


def test_two_steps_need_a_lateness_far_above_its_spread():
    # GIVEN a rank last at both of two steps, 3 ms and 2 ms late (a busy machine's kind of
    # lateness): the mean, 2.5 ms, is five standard errors (0.5 ms), but that sd rests on one
    # difference between two steps
    # THEN it is not steadily late: Student's t for one degree of freedom is 12.7
    assert not steadily_late([3 * MS, 2 * MS])
    # while a lateness that hardly moves between the steps (a slept rank) is
    assert steadily_late([200 * MS, 195 * MS])
    # and from many steps on the rule is about two standard errors
    assert steadily_late([3 * MS, 2 * MS] * 40)


def test_a_rank_late_by_waiting_for_a_cpu_is_no_straggler():
    from dsprof.analyzers.registry import analyze
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import MS, _two_ranks

    def run(runq_ms: tuple[float, float] | None) -> Run:
        base = _two_ranks(20)
        steps = base.table("steps").to_pylist()
        if runq_ms is not None:
            for row in steps:
                row["runq_ns"] = int(runq_ms[row["rank"]] * MS)
        comms = base.table("comms")
        return Run.from_tables(
            meta=dict(base.meta),
            comms={k: comms.column(k).to_pylist() for k in comms.column_names},
            steps={k: [r.get(k) for r in steps] for k in steps[0] if k != "disturbed"})

    def found(r: Run) -> tuple[list[str], list[str]]:
        out = analyze(r, only=("straggler",), write=False)
        return ([f.kind for f in out.findings],
                [s["reason"] for s in out.skipped if s["analyzer"] == "straggler"])

    # GIVEN rank 1 arriving 20 ms late at every all-reduce: asleep (its thread waited for no
    # CPU) it is the straggler, as in a run that did not read the run queue
    assert found(run((0.0, 0.0)))[0] == ["comm.straggler"]
    assert found(run(None))[0] == ["comm.straggler"]
    # THEN where its thread waited 19 ms a step for a CPU (the others' none), it is not
    kinds, why = found(run((0.0, 19.0)))
    assert kinds == [] and "waited 19.0 ms" in why[0] and "not a straggler" in why[0]
