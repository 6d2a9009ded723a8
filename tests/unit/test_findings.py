"""The Finding record and the analyzer registry, on a real imported GPU trace."""

from __future__ import annotations

import json

import pytest

from dsprof.analyzers.registry import Analyzer, Context, analyze, read_findings
from dsprof.findings import FINDINGS_FILE, Evidence, Finding, rank_key
from dsprof.ingest.importer import import_traces
from dsprof.run import load
from tests.conftest import trace_dir


def _finding(**kw) -> Finding:
    base = {"analyzer": "a", "kind": "fusion.chain", "key": "layers.0|add,mul", "title": "t"}
    base.update(kw)
    return Finding(**base)


def test_id_depends_on_kind_and_key_only():
    a = _finding(saving_s=0.5, title="one")
    b = _finding(saving_s=0.1, title="two", evidence=(Evidence("x"),))
    assert a.id == b.id and a.id.startswith("fusion-")
    assert _finding(key="layers.1|add,mul").id != a.id


@pytest.mark.parametrize(("saving_s", "saving_bytes", "severity"), [
    (0.02, 0, "high"), (0.004, 0, "medium"), (0.001, 0, "low"), (0, 0, "info"),
    (0, 600, "high"), (0, 10, "low")])
def test_severity_follows_share_of_step_or_peak(saving_s, saving_bytes, severity):
    f = _finding(saving_s=saving_s, saving_bytes=saving_bytes).rated(0.1, 1000)
    assert f.severity == severity


def test_json_round_trip_and_validation():
    f = _finding(saving_s=0.01, evidence=(Evidence("e", rank=0, op_ids=(3, 4), site="x.py:3"),),
                 apply={"DS_X": "1"}, data={"front": [[1, 2]]}).rated(0.1, None)
    doc = json.loads(json.dumps(f.to_json()))
    assert doc["id"] == f.id and doc["evidence"][0]["op_ids"] == [3, 4]
    assert Finding.from_json(doc) == f
    with pytest.raises(ValueError, match="confidence"):
        _finding(confidence="sure")
    with pytest.raises(ValueError, match="negative"):
        _finding(saving_s=-1.0)


def test_rank_key_orders_by_share_then_saving_then_id():
    fs = [_finding(key=str(i), saving_s=s).rated(1.0, None) for i, s in
          enumerate([0.01, 0.2, 0.0, 0.05])]
    assert [f.saving_s for f in sorted(fs, key=rank_key)] == [0.2, 0.05, 0.01, 0.0]


class _Boom(Analyzer):
    name = "boom"

    def run(self, ctx: Context) -> list[Finding]:
        raise RuntimeError("analyzer bug")


class _NeedsComms(Analyzer):
    name = "needs_comms"
    requires = ("comms_that_do_not_exist",)

    def run(self, ctx: Context) -> list[Finding]:
        raise AssertionError("must be skipped")


class _Slowest(Analyzer):
    name = "slowest"
    requires = ("ops",)

    def run(self, ctx: Context) -> list[Finding]:
        name, dur = ctx.run.sql("SELECT name, dur_ns FROM ops ORDER BY dur_ns DESC, id LIMIT 1")[0]
        return [Finding(self.name, "test.slowest", name, f"slowest {name}", saving_s=dur / 1e9,
                        verify="dsprof verify {run} {id}")]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "run"
    import_traces([trace_dir("hta_a100_event_sync") / "event_sync_trace.json.gz"], out)
    return out


def test_registry_skips_isolates_failures_and_is_deterministic(gpu_run):
    with load(gpu_run) as run:
        res = analyze(run, analyzers=[_Boom(), _NeedsComms(), _Slowest()])
        first = (gpu_run / FINDINGS_FILE).read_bytes()
        analyze(run, analyzers=[_Slowest(), _NeedsComms(), _Boom()])
        again = (gpu_run / FINDINGS_FILE).read_bytes()
        back = read_findings(run)
    assert res.skipped == [{"analyzer": "needs_comms",
                            "reason": "needs the comms_that_do_not_exist table"}]
    assert res.failed == [{"analyzer": "boom", "error": "RuntimeError: analyzer bug"}]
    assert [f.kind for f in res.findings] == ["test.slowest"]
    f = res.findings[0]
    assert f.verify == f"dsprof verify {gpu_run} {f.id}"  # placeholders filled
    assert f.share > 0 and f.severity != "info"
    assert first == again
    assert back is not None and back.findings == res.findings


def test_registered_analyzers_on_a_gpu_trace(gpu_run):
    """The real registry on a real A100 trace with an .item() in the forward pass."""
    with load(gpu_run) as run:
        res = analyze(run, write=False)
    assert not res.failed
    syncs = [f for f in res.findings if f.kind == "host_sync.trace"]
    item = [f for f in syncs if "_local_scalar_dense" in f.key]
    assert item and item[0].saving_s > 0, [f.title for f in syncs]
    assert "forward" in item[0].key
    assert item[0].evidence[0].op_ids and item[0].evidence[0].start_ns


@pytest.mark.parametrize(("steps", "first", "last", "expected"), [
    ([4, 9, 14, 19, 24], 1, 24, (5, 4)),
    ([1, 4, 9, 10, 14, 19, 24], 1, 24, (5, 4)),     # noise outliers do not hide the period
    ([3, 7, 15], 1, 16, None),                       # step 11 missing: not every 4th step
    ([2, 3, 6, 10, 13], 1, 15, None),                # 2, 6, 10 but not 14
    ([6, 12], 1, 13, None),                          # two are not a pattern
])
def test_period_detection(steps, first, last, expected):
    from dsprof.analyzers.step_period import period_of as _period

    assert _period(steps, first, last) == expected
