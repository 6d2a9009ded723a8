"""Speed work on the analysis inside ``dsprof import`` (issue 16) keeps every finding and both
stored reports as they were: each shared trace is imported and what it stores is compared with
tests/data/analysis_baseline.json, recorded before the speed-ups (tests/analysis_digest.py)."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from tests.analysis_digest import digests
from tests.conftest import TRACES

BASELINE = Path(__file__).resolve().parent.parent / "data" / "analysis_baseline.json"


def _diff(a: object, b: object, where: str = "") -> str | None:
    """Where two JSON values first differ (floats to 1e-9 relative: DuckDB's parallel sums may
    round differently), or None."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and float in (type(a), type(b)):
        return None if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else f"{where}: {a} != {b}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where}: keys differ {sorted(a.keys() ^ b.keys())}"
        return next((d for k in a if (d := _diff(a[k], b[k], f"{where}.{k}"))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b))
                     if (d := _diff(x, y, f"{where}[{i}]"))), None)
    return None if a == b else f"{where}: {a!r} != {b!r}"


def test_diff_finds_a_changed_finding():
    # the comparison itself: a changed saving, a lost key, an extra item are all reported
    base = {"findings": [{"saving_s": 0.5, "kind": "gpu.idle_block"}]}
    assert _diff(base, {"findings": [{"saving_s": 0.5 + 1e-14, "kind": "gpu.idle_block"}]}) is None
    assert "saving_s" in _diff(base, {"findings": [{"saving_s": 0.6, "kind": "gpu.idle_block"}]})
    assert "keys" in _diff(base, {"findings": [{"saving_s": 0.5}]})
    assert "items" in _diff(base, {"findings": []})


@pytest.mark.slow
def test_every_shared_trace_analyzes_as_before(tmp_path):
    # GIVEN the shared traces (skip without them) and the findings and reports recorded before
    if not TRACES.exists():
        pytest.skip("shared traces absent (../shared/traces)")
    baseline = orjson.loads(BASELINE.read_bytes())
    # WHEN each is imported now (folder as one run, else file by file)
    now = orjson.loads(orjson.dumps(digests(tmp_path)))
    # THEN the same traces import, with the same findings, summary and gpu reports
    assert sorted(now) == sorted(baseline)
    for trace in baseline:
        assert (d := _diff(now[trace], baseline[trace], trace)) is None, d
