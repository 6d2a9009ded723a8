"""One fact, one definition: ``dsprof diff``, verify's comparison, ``dsprof summary --json``
and the dashboard's data show the same step time, peak and measured saving for one pair of
runs (a baseline and a run made with ``--apply``), all read from ``run.facts``."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pyarrow.parquet as pq
import pytest

from dsprof.reports.verification import compare
from dsprof.rundir import RunDir
from dsprof.schema import TABLES
from tests.conftest import REPO

MS, MIB = 1_000_000, 1 << 20


def _write_run(path, meta, steps_ms, peak_mib):
    """A finished ``dsprof run`` directory with a steps and a memory_series table."""
    n = len(steps_ms)
    starts = [sum(steps_ms[:i]) * MS for i in range(n)]
    cols = {
        "steps": {"step": list(range(n)), "start_ns": starts,
                  "end_ns": [s + d * MS for s, d in zip(starts, steps_ms)],
                  "dur_ns": [d * MS for d in steps_ms], "profiled": [i == 3 for i in range(n)],
                  "window": [0 if i == 3 else None for i in range(n)]},
        "memory_series": {"step": [3], "ts_ns": [starts[3]], "capture": [0], "device": ["cpu"],
                          "total": [peak_mib * MIB], "activation": [peak_mib * MIB]},
    }
    rd = RunDir.create(path)
    rd.write_meta({"source": "run", "status": "finished", "ingested": True,
                   "target": {"kind": "script", "name": "t.py", "argv": ["t.py"]},
                   "settings": {"wait": 1, "warmup": 1, "active": 1},
                   "windows": [{"index": 0, "kind": "window", "steps": [3]}], **meta})
    for name, data in cols.items():
        table = TABLES[name]
        rows = len(next(iter(data.values())))
        full = {c: data.get(c, [0] * rows if c == "rank" else [None] * rows)
                for c in table.column_names}
        rd.table_dir(name).mkdir(parents=True)
        pq.write_table(table.build(full), rd.table_dir(name) / "rank0.parquet")
    return path


@pytest.fixture
def pair(tmp_path):
    # steps 0-1 setup, 2 warm-up, 3 profiled, 4 trace written: full speed from step 5 on
    base = _write_run(tmp_path / "base", {}, [500, 40, 30, 60, 50, 20, 21, 20, 19, 20], 1000)
    plan = {"baseline": str(base), "predicted_saving_s": 0.006, "predicted_saving_bytes": 0,
            "findings": [{"id": "fusion.optimizer:Adam", "title": "fused Adam",
                          "saving_s": 0.006, "saving_bytes": 0}]}
    fixed = _write_run(tmp_path / "fixed", {"applied": plan},
                       [500, 40, 30, 60, 50, 15, 16, 15, 14, 15], 800)
    return base, fixed


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "dsprof", *args], capture_output=True,
                          text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    return orjson.loads(proc.stdout)


def test_diff_verify_summary_and_dashboard_agree(pair):
    base, fixed = pair
    # full-speed steps 5-9: medians 20 ms and 15 ms, so 5 ms measured; peaks 1000 / 800 MiB
    want_base_s, want_fixed_s, want_saving_s = 0.020, 0.015, 0.005
    want_peak = 800 * MIB

    d = _cli("diff", str(base), str(fixed), "--json")
    assert d["a"]["median_ms"] == pytest.approx(want_base_s * 1e3)
    assert d["b"]["median_ms"] == pytest.approx(want_fixed_s * 1e3)
    assert d["b"]["peak_bytes"] == want_peak
    (applied,) = d["applied"]
    assert applied["measured_saving_ms"] == pytest.approx(want_saving_s * 1e3)
    assert applied["measured_saving_bytes"] == 200 * MIB

    v = compare(fixed)
    assert v.baseline_step_s == pytest.approx(want_base_s)
    assert v.measured_step_s == pytest.approx(want_fixed_s)
    assert v.measured_saving_s == pytest.approx(want_saving_s)
    assert v.measured_peak == want_peak and v.baseline_peak == 1000 * MIB

    s = _cli("summary", str(fixed), "--json")
    assert s["facts"]["step_median_s"] == pytest.approx(want_fixed_s)
    assert s["facts"]["peak_bytes"] == want_peak
    assert s["steps"]["median_ms"] == pytest.approx(want_fixed_s * 1e3)

    from dsprof.dashboard.pages.findings import applied_comparison
    from dsprof.dashboard.source import RunSource
    from dsprof.reports.diff import diff

    a, b = RunSource(base, "A"), RunSource(fixed, "B")
    try:
        assert b.summary.facts["step_median_s"] == pytest.approx(want_fixed_s)
        assert b.summary.facts["peak_bytes"] == want_peak
        dv = applied_comparison(b)
        assert dv.measured_saving_s == pytest.approx(want_saving_s)
        dd = diff(a.run, b.run)  # what the Compare page shows
        assert dd.b.median_ms == pytest.approx(want_fixed_s * 1e3)
        assert dd.applied[0].measured_saving_ms == pytest.approx(want_saving_s * 1e3)
    finally:
        a.close()
        b.close()


def test_a_fix_whose_finding_models_no_memory_predicts_no_peak(pair, tmp_path):
    base, fixed = pair
    # GIVEN a fix whose finding prices time only (saving_bytes 0: autocast off, fused Adam)
    v = compare(fixed)
    # THEN verify predicts no peak ("+0.0 MiB" was printed for turning bf16 autocast off,
    # measured +7.5 MiB), and still measures it
    assert v.predicted_peak is None and v.measured_peak == 800 * MIB
    # GIVEN a finding that models the bytes it frees (checkpointing): predicted
    plan = {"baseline": str(base), "predicted_saving_s": 0.0, "predicted_saving_bytes": 300 * MIB,
            "findings": [{"id": "checkpointing:M.blocks", "title": "checkpoint",
                          "saving_s": 0.0, "saving_bytes": 300 * MIB}]}
    ckpt = _write_run(tmp_path / "ckpt", {"applied": plan},
                      [500, 40, 30, 60, 50, 25, 26, 25, 24, 25], 750)
    assert compare(ckpt).predicted_peak == 700 * MIB
