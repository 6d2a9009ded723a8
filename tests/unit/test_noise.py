"""Disturbed steps, the step-time noise model, and how the registry holds findings to them.

Runs here are real run directories with a real ``steps`` Parquet table, written through the
schema the ingest uses; only the step times are chosen by the test."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dsprof.analyzers.registry import Analyzer, Context, analyze
from dsprof.analyzers.step_outliers import StepOutliers
from dsprof.findings import Finding
from dsprof.ingest.disturbed import disturbed_reasons, in_loop_reasons, loop_edges, loop_index
from dsprof.ingest.steps import steps_from_record
from dsprof.metrics.noise import series_noise, steady_steps, step_noise
from dsprof.run import load
from dsprof.rundir import RunDir
from dsprof.schema import SCHEMA_VERSION, STEPS

MS = 1_000_000
WINDOW = [{"index": 0, "kind": "steps", "steps": [7, 8, 9], "file": "x", "capped": False}]
SETTINGS = {"wait": 5, "warmup": 1, "active": 3}


def make_run(path: Path, durs_ms: list[float], *, cpu_ms: list[float] | None = None,
             env: dict[str, str] | None = None, settings: dict | None = None,
             windows: list[dict] | None = None, devices: dict | None = None,
             gc_ms: dict[int, tuple[float, int]] | None = None,
             source: str = "optimizer", data_wait_ms: list[float] | None = None,
             step_faults: list[int] | None = None,
             optimizer_cpu_ms: list[float | None] | None = None) -> Path:
    """A ``dsprof run`` directory whose steps take ``durs_ms``; ``gc_ms``: step -> (ms in the
    garbage collector, generation) for the steps where it ran; ``source``: what marked the
    steps."""
    settings = {**SETTINGS, **(settings or {})}
    env = env or {}
    windows = WINDOW if windows is None else windows
    rd = RunDir.create(path)
    meta = {"schema_version": SCHEMA_VERSION, "source": "run", "status": "finished",
            "ingested": True, "settings": settings, "env": env, "windows": windows,
            "devices": devices or {"0": {"kind": "cpu", "name": "cpu"}}, "world_size": 1}
    rd.write_meta(meta)
    bounds, t = [], 0
    for d in durs_ms:
        t += int(d * MS)
        bounds.append(t)
    rec = {"start_ns": 0, "boundaries_ns": bounds, "windows": windows, "source": source,
           "cpu_ns": [int(c * MS) for c in cpu_ms] if cpu_ms else []}
    if data_wait_ms is not None:
        rec["data_wait_ns"] = [int(w * MS) for w in data_wait_ms]
    if step_faults is not None:
        rec["step_faults"] = step_faults
    if optimizer_cpu_ms is not None:
        rec["optimizer_cpu_ns"] = [None if c is None else int(c * MS) for c in optimizer_cpu_ms]
    if gc_ms is not None:
        rec["gc_ns"] = [int(gc_ms[i][0] * MS) if i in gc_ms else 0 for i in range(len(bounds))]
        rec["gc_generation"] = [gc_ms[i][1] if i in gc_ms else None for i in range(len(bounds))]
    cols = steps_from_record(rec, 0, meta)
    out = rd.table_dir("steps")
    out.mkdir(parents=True)
    pq.write_table(STEPS.build(cols), out / "rank0.parquet")
    return path


def test_disturbed_reasons_mark_setup_windows_warmup_and_the_trace_write():
    # GIVEN 14 steps, a window over steps 7-9 with one warm-up step
    # WHEN the ingest marks them
    reasons = disturbed_reasons(14, WINDOW, SETTINGS, {})
    # THEN setup, first call, warm-up, window and the step writing the trace are marked
    assert reasons[:2] == ["setup", "first_call"]
    assert reasons[6] == "warmup" and reasons[7:10] == ["window"] * 3
    assert reasons[10] == "trace_write"
    assert [i for i, r in enumerate(reasons) if r is None] == [2, 3, 4, 5, 11, 12, 13]
    # AND every step of a DEBUG or an anomaly-check run is disturbed
    assert set(disturbed_reasons(5, WINDOW, SETTINGS, {"DS_LOG_LEVEL": "debug"})) == \
        {"debug_trace"}
    assert set(disturbed_reasons(5, [], {**SETTINGS, "detect_anomaly": True}, {})) == \
        {"anomaly_check"}
    # AND with no wait the profiler starts in the step before the window
    assert disturbed_reasons(6, [{"steps": [2, 3]}], {"wait": 0, "warmup": 0}, {})[1] == \
        "first_call"
    assert disturbed_reasons(8, [{"steps": [4, 5]}], {"wait": 0, "warmup": 0}, {})[3] == "warmup"


def test_the_loops_the_record_is_not_of_are_set_apart():
    # GIVEN 10 forward steps (0-9), then training marked steps 10-29
    aside = [{"index": 0, "kind": "earlier_loop", "steps": [4, 5]},
             {"index": 1, "kind": "window", "steps": [20, 21]}]
    sources = ["forward"] * 10 + ["optimizer"] * 20
    # WHEN the training has a window of its own
    reasons = disturbed_reasons(30, aside, SETTINGS, {}, loop_starts=[10], sources=sources)
    # THEN the forward steps are another loop, and the training's first two steps its start
    assert reasons[0] == "setup" and reasons[1:10] == ["earlier_loop"] * 9
    assert reasons[10:12] == ["loop_start"] * 2
    assert reasons[19:23] == ["warmup", "window", "window", "trace_write"]
    assert [i for i, r in enumerate(reasons) if r is None] == \
        [*range(12, 19), *range(23, 30)]
    # AND when only the forward loop has a window, the training steps and the last forward
    # step (the code between the loops) are the ones set apart
    only_forward = [{"index": 0, "kind": "window", "steps": [4, 5]}]
    reasons = disturbed_reasons(16, only_forward, SETTINGS, {}, loop_starts=[10],
                                sources=sources[:16])
    assert reasons[9:] == ["later_loop"] * 7
    assert reasons[4:7] == ["window", "window", "trace_write"] and reasons[8] is None
    # AND of three optimizer loops (a sweep), the latest with a window is the record: the
    # middle one here, the last one's steps too few for a window
    three = [{"index": 0, "kind": "earlier_loop", "steps": [4, 5]},
             {"index": 1, "kind": "window", "steps": [17, 18]}]
    reasons = disturbed_reasons(30, three, SETTINGS, {}, loop_starts=[10, 25],
                                sources=["optimizer"] * 30)
    assert reasons[1:10] == ["earlier_loop"] * 9 and reasons[10:12] == ["loop_start"] * 2
    assert reasons[25:] == ["later_loop"] * 5 and reasons[24] is None


def test_each_loop_gets_its_own_reasons_as_if_it_were_the_record():
    # GIVEN a sweep of three optimizer loops (0-9, 10-24, 25-29): the first loop's window set
    # aside, the middle loop's the record, the last one too short for a window
    three = [{"index": 0, "kind": "earlier_loop", "steps": [4, 5]},
             {"index": 1, "kind": "window", "steps": [17, 18]}]
    edges = loop_edges([10, 25], 30)

    def reasons(loop):
        return disturbed_reasons(30, three, SETTINGS, {}, loop_starts=[10, 25],
                                 sources=["optimizer"] * 30, loop=loop)

    # WHEN each step's reason is taken as if its own loop were the record
    own = in_loop_reasons(edges, reasons)
    assert loop_index(edges) == [0] * 10 + [1] * 15 + [2] * 5
    # THEN the first loop has its setup, first calls and its set-aside window's steps
    assert own[:10] == ["setup", "first_call", None, "warmup", "window", "window",
                        "trace_write", None, None, None]
    # AND the record's own reasons are the run's, the later loop's first two steps its start
    assert own[10:25] == reasons(None)[10:25]
    assert own[25:] == ["loop_start", "loop_start", None, None, None]
    # AND no step is another loop's but the last of a forward loop that training follows
    assert not {"earlier_loop", "later_loop"} & set(own)
    sources = ["forward"] * 10 + ["optimizer"] * 20
    forward_first = in_loop_reasons(loop_edges([10], 30), lambda loop: disturbed_reasons(
        30, three[:1], SETTINGS, {}, loop_starts=[10], sources=sources, loop=loop))
    assert forward_first[9] == "later_loop" and forward_first[10:12] == ["loop_start"] * 2
    # AND with one loop the column is the run's reasons
    assert in_loop_reasons(loop_edges([], 30), reasons) == reasons(None)


def _aftermath_marks(faults: list[int], durs_ms: list[float]) -> list[str | None]:
    return disturbed_reasons(len(faults), WINDOW, SETTINGS, {}, step_faults=faults,
                             dur_ns=[int(d * MS) for d in durs_ms])


# 20 steps around a window over 7-9: steady ones take 20 ms and 0-1,500 fresh pages
STEADY_FAULTS = [50_000, 9_000, 500, 1_500, 0, 480, 600, 2_000, 9_000, 9_000, 60, 0, 0, 480,
                 1_500, 0, 0, 480, 0, 1_000]
STEADY_MS = [900, 90, 20, 21, 20, 19, 23, 30, 40, 40, 60, 20, 20, 21, 19, 20, 20, 21, 20, 19]


def test_the_steps_after_trace_write_are_aftermath_only_when_measured_so():
    # GIVEN a run whose two steps after the trace write took fresh pages no steady step
    # took, and ran slow (the heap the window left behind, fusion_mlp before the fix)
    faults, durs = list(STEADY_FAULTS), list(STEADY_MS)
    faults[11:13], durs[11:13] = [8_161, 6_112], [73.0, 34.6]
    # WHEN the ingest marks them
    marks = _aftermath_marks(faults, durs)
    # THEN both are the window's aftermath, and the first ordinary step after them is steady
    assert marks[10] == "trace_write" and marks[11:13] == ["trace_aftermath"] * 2
    assert marks[13] is None
    # AND the same run, measured quiet after the trace write, has no aftermath
    assert "trace_aftermath" not in _aftermath_marks(STEADY_FAULTS, STEADY_MS)
    # AND many fresh pages in a step that did not run slow are not an aftermath
    quick = list(STEADY_FAULTS)
    quick[11] = 8_161
    assert _aftermath_marks(quick, STEADY_MS)[11] is None
    # AND a loop whose steady steps map as many pages is not marked for it either
    busy = [f if i < 2 else 7_000 + 100 * (i % 5) for i, f in enumerate(STEADY_FAULTS)]
    busy[11] = 7_300
    slow = list(STEADY_MS)
    slow[11] = 40
    assert _aftermath_marks(busy, slow)[11] is None
    # AND a run without per-step faults (another OS, an older run) is marked as before
    assert "trace_aftermath" not in disturbed_reasons(
        20, WINDOW, SETTINGS, {}, step_faults=None, dur_ns=[int(d * MS) for d in durs])


def test_an_aftermath_step_is_left_out_of_the_steady_steps(tmp_path):
    # GIVEN a recorded run whose step after the trace write faulted and ran slow
    faults, durs = list(STEADY_FAULTS), list(STEADY_MS)
    faults[11], durs[11] = 8_161, 73.0
    path = make_run(tmp_path / "r", durs, step_faults=faults)
    with load(path) as run:
        marks = dict(run.sql("SELECT step, disturbed_by FROM steps"))
        steady = [s for s, _, _ in steady_steps(run)]
    # THEN the ingest marked it, and it is no evidence of the program's speed
    assert marks[11] == "trace_aftermath"
    assert 11 not in steady and 12 in steady


def test_steady_steps_and_noise_leave_out_what_dsprof_disturbed(tmp_path):
    # GIVEN a steady 10 ms run where dsprof's own steps are slow (setup, window, trace write)
    durs = [300, 40, 10, 10.2, 9.8, 10.1, 12, 30, 30, 30, 35, 9.9, 10.0, 10.3]
    with load(make_run(tmp_path / "r", durs)) as run:
        # WHEN steady steps and noise are taken
        steady = [s for s, _, _ in steady_steps(run)]
        noise = step_noise(run)
    # THEN only undisturbed steps count, and the spread is that of the 10 ms steps
    assert steady == [2, 3, 4, 5, 11, 12, 13]
    assert noise is not None and noise.n == 7
    assert noise.median_s == pytest.approx(0.0100, abs=2e-4)
    assert noise.sd_s < 0.0005
    assert noise.inside(0.0001) and not noise.inside(0.002)


def test_series_noise_band_shrinks_with_more_steps():
    few = series_noise([10 * MS, 11 * MS, 9 * MS, 10 * MS, 12 * MS])
    many = series_noise([10 * MS, 11 * MS, 9 * MS, 10 * MS, 12 * MS] * 8)
    assert few is not None and many is not None
    assert many.band_s() < few.band_s()
    assert few.sd_s == pytest.approx(1.4826e-3)


def test_the_step_after_a_window_is_never_an_outlier(tmp_path):
    # GIVEN a steady run whose only slow step is the one writing the window's trace
    durs = [200] + [10.0, 10.1, 9.9, 10.2, 10.0, 9.8, 10, 10, 10, 31, 10.1, 9.9, 10.0, 10.2]
    with load(make_run(tmp_path / "r", durs)) as run:
        # WHEN the outlier analyzer runs
        found = analyze(run, only=("step_outliers",), write=False).findings
    # THEN nothing is reported: dsprof's own cost is not the user's problem
    assert found == []


def test_steps_off_the_cpu_on_a_cpu_run_are_noise_not_a_saving(tmp_path):
    # GIVEN steady 10 ms steps (all CPU) and three 30 ms steps whose extra time was off the CPU
    durs = [200, 40] + [10] * 6 + [10] * 4 + [30, 10, 10, 30, 10, 10, 10, 30, 10, 10, 10]
    cpu = [d if d != 30 else 10 for d in durs]
    with load(make_run(tmp_path / "r", durs, cpu_ms=cpu)) as run:
        found = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the finding says noise on this machine, with no saving and not ranked
    (f,) = found
    assert f.kind == "steps.noise" and f.saving_s == 0 and f.severity == "info"
    assert "off the CPU" in f.title


def test_slow_first_steps_the_run_settles_after_are_warmup_not_a_saving(tmp_path):
    # GIVEN the first four steady steps at 1.6x (on the CPU all the time: more work, done
    # once), then a run that stays at 10 ms (resnet18 on CPU showed this: 65-72 ms, then 43)
    durs = [200, 40] + [16, 16.5, 15.5, 16] + [10] * 5 + [10] * 12
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN it is named warm-up, paid once: no saving, not ranked
    assert f.kind == "steps.warmup" and f.saving_s == 0 and f.severity == "info"
    assert f.data["steps"] == [2, 3, 4, 5]
    assert "Steps 2-5" in f.title and "warm-up" in f.title
    assert "no change is proposed" in f.verify


def test_a_slow_step_after_normal_ones_is_not_warmup(tmp_path):
    # GIVEN the same slow steps, but one normal step runs before them
    durs = [200, 40] + [10, 16, 16.5, 15.5, 16] + [10] * 4 + [10] * 12
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN they are outliers that did more work: a saving to look for
    assert f.kind == "steps.outliers" and f.saving_s > 0


def test_outliers_that_did_more_work_are_still_found(tmp_path):
    # GIVEN the same slow steps, but on the CPU all the time (the program did more work)
    durs = [200, 40] + [10] * 6 + [10] * 4 + [30, 10, 10, 30, 10, 10, 10, 30, 10, 10, 10]
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    assert f.kind == "steps.outliers" and f.saving_s > 0 and f.severity != "info"


class _Claims(Analyzer):
    name = "claims"

    def __init__(self, saving_s: float, kind: str = "test.claim"):
        self.saving_s = saving_s
        self.kind = kind

    def run(self, ctx: Context) -> list[Finding]:
        return [Finding(self.name, self.kind, "k", "a claim", saving_s=self.saving_s)]


def test_timing_findings_of_a_debug_run_are_withheld_with_the_reason(tmp_path):
    # GIVEN a run recorded with DS_LOG_LEVEL=DEBUG
    run_dir = make_run(tmp_path / "r", [10.0] * 20, env={"DS_LOG_LEVEL": "DEBUG"})
    with load(run_dir) as run:
        # WHEN a finding claims 30 % of a step
        res = analyze(run, analyzers=[_Claims(0.003), StepOutliers()], write=False)
    # THEN it is kept but not ranked, and the notes say why
    (f,) = res.findings
    assert f.severity == "info" and f.data["withheld"] == "debug_trace"
    assert "DS_LOG_LEVEL=DEBUG" in f.explanation
    assert res.notes[0]["kind"] == "withheld" and "DEBUG" in res.notes[0]["text"]
    assert res.skipped[0]["analyzer"] == "step_outliers"


def test_a_saving_inside_the_noise_is_not_ranked(tmp_path):
    # GIVEN steady steps that vary by about 1 ms around 10 ms
    durs = [200, 40] + [9, 10, 11, 10, 9, 11, 30, 30, 30, 30, 30] + [10, 11, 9, 10, 12, 8, 10]
    with load(make_run(tmp_path / "r", durs)) as run:
        noise = step_noise(run)
        small = analyze(run, analyzers=[_Claims(0.0002)], write=False)
        large = analyze(run, analyzers=[_Claims(0.004)], write=False)
    assert noise is not None and noise.band_s() > 0.0002
    # THEN a 0.2 ms claim is kept as information, with the noise it is inside of
    (f,) = small.findings
    assert f.severity == "info" and f.data["inside_noise"]["steady_steps"] == noise.n
    # AND a 4 ms claim is ranked as usual, with the noise stated in the notes
    (g,) = large.findings
    assert g.severity == "high" and "inside_noise" not in g.data
    assert any(n["kind"] == "noise" for n in large.notes)
    assert large.noise is not None and large.noise["steady_steps"] == noise.n


def test_gpu_only_advice_on_a_cpu_run_is_a_note_not_a_finding(tmp_path):
    with load(make_run(tmp_path / "r", [10.0] * 20)) as run:
        res = analyze(run, analyzers=[_Claims(0.0, kind="tensor_core.tf32_off")], write=False)
    assert res.findings == []
    assert res.notes[0]["kind"] == "gpu" and res.notes[0]["text"].startswith(
        "When you move to a GPU:")


def test_verify_says_no_measurable_change_inside_the_arms_spread():
    from dsprof.reports.verification import Verification

    # GIVEN two arms whose steps flip between ~10 and ~270 ms (a noisy Lightning loader)
    def arm(baseline_s, measured_s, sd_s, n):
        return Verification(Path("a"), Path("b"), [], baseline_s, baseline_s * 0.99,
                            measured_s, (n, n), None, None, None, sd_s, sd_s)

    noisy = arm(0.2597, 0.0556, 0.19, 6)  # half the steps ~10 ms, half ~270: MAD ~130 ms
    steady = arm(0.2597, 0.0556, 0.002, 20)
    # THEN the 204 ms difference is inside the noisy arms' spread, and outside the steady ones'
    assert noisy.measurable is False and noisy.band_s > 0.204
    assert steady.measurable is True
    assert noisy.to_json()["measurable"] is False


def test_student_t_for_a_few_rounds_and_many():
    from dsprof.metrics.noise import t_975

    assert t_975(1) == pytest.approx(12.706)
    assert t_975(3) == pytest.approx(3.182)
    assert t_975(30) == pytest.approx(2.042)
    assert t_975(60) == pytest.approx(2.000, abs=0.003)
    assert t_975(1000) == pytest.approx(1.962, abs=0.003)
    with pytest.raises(ValueError):
        t_975(0)


def test_paired_change_is_per_round_and_leaves_out_a_round_without_steps():
    from dsprof.metrics.noise import paired_change

    # GIVEN three rounds: medians 10 vs 9, 12 vs 10.5, and a fix run with no steady step
    p = paired_change([[10.0, 10.0, 11.0], [12.0, 12.0], [10.0]], [[9.0, 9.0, 8.0], [10.5], []])
    # THEN two rounds pair: changes 1.0 and 1.5, their mean, sd and t(0.975, 1) band
    assert p.diffs_s == (1.0, 1.5)
    assert p.mean_s == pytest.approx(1.25)
    assert p.sd_s == pytest.approx(0.125 ** 0.5)  # the sample sd of 1.0 and 1.5
    assert p.band_s == pytest.approx(12.706 * p.sd_s / 2 ** 0.5)
    # AND one round has a change but no band
    one = paired_change([[10.0]], [[9.0]])
    assert one.rounds == 1 and one.sd_s is None and one.band_s is None
    assert paired_change([[]], [[9.0]]) is None
