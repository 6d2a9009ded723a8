"""The run layer: RunManifest (typed, versioned meta.json), table views that fill columns an
older run lacks, Run.from_tables, and Facts (the one step-time and peak rule)."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dsprof.errors import RunDirError
from dsprof.facts import (
    AFTER_SETUP,
    ALL_STEPS,
    ALLOCATOR_PEAK,
    FULL_SPEED,
    LIVE_BYTES,
    PROCESS_RSS,
    PROFILER_WARMUP,
    RECORDED,
    measured_saving,
)
from dsprof.manifest import load_manifest, parse
from dsprof.reports.diff import ALL_APPLIED, diff
from dsprof.run import Run, load
from dsprof.schema import SCHEMA_VERSION, TABLES

WINDOW_AT_5 = {"windows": [{"index": 0, "kind": "window", "steps": [5, 6]}],
               "settings": {"wait": 0, "warmup": 1}}


def _steps(durs_ms, **cols):
    n = len(durs_ms)
    return {"step": list(range(n)), "start_ns": [i * 10**9 for i in range(n)],
            "end_ns": [i * 10**9 + int(d * 1e6) for i, d in enumerate(durs_ms)],
            "dur_ns": [int(d * 1e6) for d in durs_ms], "profiled": [False] * n, **cols}


# a 6-step run with wait 1, warm-up 1, active 2: every step after setup disturbed
SIX_STEPS_BY = ["setup", "first_call", "warmup", "window", "window", "trace_write"]


def _six_steps(durs_ms):
    return Run.from_tables(steps=_steps(durs_ms, disturbed_by=SIX_STEPS_BY),
                           meta={"windows": [{"index": 0, "steps": [3, 4]}],
                                 "settings": {"wait": 1, "warmup": 1}})


def test_manifest_types_the_header_and_refuses_a_newer_one_in_one_line():
    m = parse({"schema_version": SCHEMA_VERSION, "source": "run",
               "target": {"kind": "module", "name": "pkg.train", "argv": ["x", "--lr", "1e-3"]},
               "devices": {"0": {"kind": "cpu", "name": "cpu"},
                           "1": {"kind": "cuda", "name": "NVIDIA L40S"}},
               "settings": {"wait": 0, "warmup": 0}})
    assert m.is_run and m.target.command == "-m pkg.train --lr 1e-3"
    assert m.device_name(0) is None and m.device_name(1) == "NVIDIA L40S"
    assert m.warmup == 1  # torch's schedule: a window after no wait has one warm-up step
    with pytest.raises(RunDirError) as err:
        parse({"schema_version": SCHEMA_VERSION + 1})
    assert "newer dsprof" in str(err.value) and "\n" not in str(err.value)


def test_a_gpu_run_that_never_ended_has_no_device_name_or_size_rather_than_empty_ones():
    # its facts wait for the script's CUDA start (collectors/device.py), and nobody wrote them
    m = parse({"schema_version": SCHEMA_VERSION, "source": "run",
               "devices": {"0": {"kind": "cuda", "index": None, "name": "", "total_memory": 0,
                                 "capability": None, "count": 8}}})
    dev = m.device(0)
    assert dev is not None and dev.accelerator
    assert dev.name is None and dev.total_memory is None and m.device_name(0) is None


def test_a_version_1_header_is_upgraded_in_one_place(tmp_path):
    (tmp_path / "meta.json").write_bytes(orjson.dumps({"schema_version": 1, "status": "x"}))
    m = load_manifest(tmp_path)
    assert m.schema_version == SCHEMA_VERSION and m.source == "run"
    assert m.steps_source == "optimizer"


def test_a_column_missing_from_an_older_runs_parquet_reads_as_null(tmp_path):
    # GIVEN a run whose steps Parquet predates the batch_size and skipped columns
    cols = [c for c in TABLES["steps"].columns
            if c.name not in ("batch_size", "skipped", "disturbed_by")]
    data = {c.name: pa.array([0, 1] if c.type != pa.string() else ["optimizer"] * 2, c.type)
            if c.type != pa.bool_() else pa.array([False, False]) for c in cols}
    (tmp_path / "tables" / "steps").mkdir(parents=True)
    pq.write_table(pa.table(data), tmp_path / "tables" / "steps" / "rank0.parquet")
    (tmp_path / "meta.json").write_bytes(orjson.dumps({"schema_version": 1, "ingested": True}))
    # WHEN loaded THEN every current column is there, the missing ones null, disturbed derived
    with load(tmp_path) as run:
        assert run.sql("SELECT count(batch_size), count(skipped), bool_or(disturbed) "
                       "FROM steps") == [(0, 0, False)]
        names = [r[0] for r in run.sql("DESCRIBE steps")]
    assert set(TABLES["steps"].column_names) | {"disturbed"} <= set(names)


def test_from_tables_builds_a_run_in_memory_and_rejects_unknown_columns():
    run = Run.from_tables(steps=_steps([1, 2]), ops={"name": ["aten::mm"], "dur_ns": [5]})
    assert run.tables == ["steps", "ops"] and run.sql("SELECT rank, name FROM ops") == \
        [(0, "aten::mm")]
    with pytest.raises(KeyError):
        Run.from_tables(steps={"no_such_column": [1]})


def test_step_time_counts_full_speed_steps_only():
    # GIVEN a dsprof run: slow setup (0), first calls (1), a window at 5-6 with warm-up 4 and
    # the trace written at 7: all slower than the steady 10 ms
    durs = [500, 30, 10, 10, 40, 40, 40, 40, 10, 10]
    run = Run.from_tables(steps=_steps(durs), meta=WINDOW_AT_5)
    st = run.facts.step
    assert st.rule == FULL_SPEED and [s for _, s, _ in st.counted] == [2, 3, 8, 9]
    assert st.median_s == pytest.approx(0.010) and st.mean_s == pytest.approx(0.010)
    assert run.sql("SELECT list(step ORDER BY step) FROM steps WHERE disturbed")[0][0] == \
        [4, 5, 6, 7]


def test_step_time_falls_back_when_no_step_ran_at_full_speed():
    short = Run.from_tables(steps=_steps([500, 20, 30]),
                            meta={"windows": [{"index": 0, "steps": [2]}]})
    assert short.facts.step.rule == AFTER_SETUP and short.facts.step.median_s == \
        pytest.approx(0.025)
    imported = Run.from_tables(steps=_steps([5, 7, 9]), meta={"source": "import"})
    assert imported.facts.step.rule == ALL_STEPS and imported.facts.step.steps == 3


def test_a_short_all_profiled_run_counts_its_profiler_warm_up_not_the_trace_write():
    # GIVEN the corpus' 6-step run of the tiny GPT-2 (wait 1, warm-up 1, active 2): every step
    # after setup disturbed; the first calls' step and the step that wrote the trace far slower
    # than the 6.5 ms the script steps at
    by = SIX_STEPS_BY
    run = _six_steps([3500, 49, 7.2, 17.9, 16.4, 104.8])
    # THEN the step time is the warm-up step's, which the profiler only prepared in
    st = run.facts.step
    assert st.rule == PROFILER_WARMUP and [s for _, s, _ in st.counted] == [2]
    assert st.mean_s == pytest.approx(0.0072)
    # AND without a warm-up step, the recorded steps (never the trace write nor first calls)
    no_warmup = Run.from_tables(
        steps=_steps([3500, 49, 17.9, 16.4, 104.8], disturbed_by=by[:2] + by[3:]),
        meta={"windows": [{"index": 0, "steps": [2, 3]}], "settings": {"wait": 0, "warmup": 0}})
    assert no_warmup.facts.step.rule == RECORDED
    assert [s for _, s, _ in no_warmup.facts.step.counted] == [2, 3]


def test_no_fallback_counts_the_loop_the_window_did_not_record():
    # GIVEN a short run of 6 forward steps before training, whose 5 training steps were all
    # profiled or started the training: no full-speed step
    by = ["setup", *["earlier_loop"] * 5, "loop_start", "loop_start",
          "warmup", "window", "window"]
    durs = [900, 50, 0.5, 0.5, 0.5, 0.5, 30, 12, 10, 11, 11]
    run = Run.from_tables(steps=_steps(durs, disturbed_by=by),
                          meta={"windows": [{"index": 1, "kind": "window", "steps": [9, 10]}],
                                "settings": {"wait": 0, "warmup": 1}})
    # THEN the fallback is the training's profiler warm-up, never the forward steps
    st = run.facts.step
    assert st.rule == PROFILER_WARMUP and [s for _, s, _ in st.counted] == [8]
    # AND "steps after setup" leaves the other loop out too
    no_profile = Run.from_tables(steps=_steps(durs[:9], disturbed_by=by[:8] + ["trace_write"]),
                                 meta={"settings": {"wait": 0, "warmup": 1}})
    assert no_profile.facts.step.rule == AFTER_SETUP
    assert [s for _, s, _ in no_profile.facts.step.counted] == [8]


def test_the_fastest_step_bounds_the_quiet_pace_whatever_slowed_the_counted_steps():
    # GIVEN CI's 6-step run of test_swap_memory on a loaded machine: the step its time is
    # taken from (2, the profiler's warm-up) took 1.16 s, its profiled steps 32 and 40 ms
    run = _six_steps([1972, 1708, 1162, 31.7, 39.5, 390.9])
    st = run.facts.step
    # THEN the mean is the counted step's, and the fastest step the profiled one's
    assert st.rule == PROFILER_WARMUP and st.mean_s == pytest.approx(1.162)
    assert st.fastest_s == pytest.approx(0.0317)
    # AND neither setup nor another loop's forward steps (0.5 ms) are a training step's pace
    by = ["setup", *["earlier_loop"] * 5, "loop_start", "loop_start", "warmup", "window"]
    run = Run.from_tables(steps=_steps([0.1, 50, 0.5, 0.5, 0.5, 0.5, 30, 12, 10, 11],
                                       disturbed_by=by),
                          meta={"windows": [{"index": 1, "kind": "window", "steps": [9]}],
                                "settings": {"wait": 0, "warmup": 1}})
    assert run.facts.step.fastest_s == pytest.approx(0.010)
    # AND an import's steps are all the profiler's: its fastest is their shortest
    imported = Run.from_tables(steps=_steps([5, 7, 9]), meta={"source": "import"})
    assert imported.facts.step.fastest_s == pytest.approx(0.005)


def test_each_loop_of_a_sweep_gets_its_step_time_by_the_same_rule():
    # GIVEN a sweep of two configurations, 10 steps each: the first's window (4-5) set aside,
    # the second's (16-17) the record; the first steps at 2 ms, the second at 8 ms
    durs = [500, 30, 2, 9, 9, 9, 9, 2, 2, 2,
            40, 30, 8, 8, 8, 20, 20, 20, 20, 8]
    by = ["setup", *["earlier_loop"] * 9, "loop_start", "loop_start", None, None, None,
          "warmup", "window", "window", "trace_write", None]
    own = ["setup", "first_call", None, "warmup", "window", "window", "trace_write", None,
           None, None, *by[10:]]
    run = Run.from_tables(
        steps=_steps(durs, disturbed_by=by, loop=[0] * 10 + [1] * 10, loop_disturbed_by=own,
                     source=["optimizer"] * 20, batch_size=[32] * 20),
        meta={"loop_starts": [10], "settings": {"wait": 0, "warmup": 1},
              "windows": [{"index": 0, "kind": "earlier_loop", "steps": [4, 5]},
                          {"index": 1, "kind": "window", "steps": [16, 17]}]})
    first, second = run.facts.loops
    # THEN each loop's steady steps count, its own start and window's steps left out
    assert (first.first_step, first.last_step, first.recorded) == (0, 9, False)
    assert [s for _, s, _ in first.step.counted] == [2, 7, 8, 9]
    assert first.step.median_s == pytest.approx(0.002) and first.source == "optimizer"
    assert first.step.samples_per_s == pytest.approx(32 / 0.002)
    # AND the record's loop is the run's step time, by the one rule
    st = run.facts.step
    assert second.recorded and (second.step.rule, second.step.counted, second.step.mean_s) == \
        (st.rule, st.counted, st.mean_s)
    assert [s for _, s, _ in second.step.counted] == [12, 13, 14, 19]
    # AND a run of one loop has none
    assert Run.from_tables(steps=_steps([500, 30, 10, 10]), meta=WINDOW_AT_5).facts.loops == ()


def test_peak_prefers_the_allocator_then_live_bytes_then_rss_per_rank():
    run = Run.from_tables(
        steps={**_steps([1, 1]), "rank": [0, 1], "device_peak_bytes": [None, 900],
               "rss_bytes": [5000, 6000]},
        memory_series={"rank": [0], "total": [700]})
    assert [(p.rank, p.bytes, p.source) for p in run.facts.peaks] == \
        [(0, 700, LIVE_BYTES), (1, 900, ALLOCATOR_PEAK)]
    assert run.facts.peak_bytes == 900 and run.facts.peak_source == ALLOCATOR_PEAK
    cpu = Run.from_tables(steps={**_steps([1]), "rss_bytes": [5000]})
    assert (cpu.facts.peak_bytes, cpu.facts.peak_source) == (5000, PROCESS_RSS)


def _applied_pair(findings):
    base = Run.from_tables(steps=_steps([500, 30, 20, 20, 20]),
                           memory_series={"total": [1000]})
    fixed = Run.from_tables(
        steps=_steps([500, 30, 15, 15, 15]), memory_series={"total": [800]},
        meta={"applied": {"baseline": "base", "findings": findings, "predicted_saving_s": 0.006,
                          "predicted_saving_bytes": 0}})
    return base, fixed


def test_diff_puts_the_measured_change_on_one_row_when_several_findings_were_applied(
        monkeypatch):
    import dsprof.reports.diff as diff_mod

    monkeypatch.setattr(diff_mod, "_findings", lambda run: {})  # no findings.json in memory
    two = [{"id": "a", "title": "A", "saving_s": 0.004}, {"id": "b", "title": "B",
                                                           "saving_s": 0.002}]
    d = diff(*_applied_pair(two))
    assert [r.measured_saving_ms for r in d.applied[:2]] == [None, None]
    total = d.applied[-1]
    assert total.id == ALL_APPLIED and total.predicted_saving_ms == pytest.approx(6.0)
    assert total.measured_saving_ms == pytest.approx(5.0)
    assert total.measured_saving_bytes == 200
    (only,) = diff(*_applied_pair(two[:1])).applied
    assert only.id == "a" and only.measured_saving_ms == pytest.approx(5.0)
    base, fixed = _applied_pair(two)
    assert measured_saving(base.facts, fixed.facts) == (pytest.approx(0.005), 200)


def test_only_the_manifest_reads_meta_json():
    from tests.conftest import REPO

    readers = []
    for path in (REPO / "dsprof").rglob("*.py"):
        if path.name == "manifest.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            names_meta = any(k in line for k in ('"meta.json"', "meta_path", "META)", "META_FILE"))
            reads = any(k in line for k in ("read_bytes", "read_text", "open(", "loads("))
            if names_meta and reads:
                readers.append(f"{path.relative_to(REPO)}:{n}")
    assert readers == []
