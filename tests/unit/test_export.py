"""``dsprof export``: Chrome/Perfetto traces checked against the Trace Event Format schema,
TensorBoard event files read back with TensorBoard's own reader."""

from __future__ import annotations

import gzip
import json
import shutil

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import dsprof
from dsprof.export.chrome import build_trace, write_trace
from dsprof.export.tensorboard import write_tensorboard
from dsprof.ingest.importer import import_traces
from tests.conftest import trace_dir
from tests.integration.helpers import dsprof as dsprof_cli

# The Trace Event Format (Chrome's "Trace Event Format" document, the JSON Object Format)
# for the phases dsprof writes: complete (X), instant (i), counter (C), metadata (M).
_NUM = {"type": "number"}
_ID = {"type": "integer"}
CHROME_TRACE_SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "traceEvents": {"type": "array", "items": {"oneOf": [
            {"type": "object", "required": ["ph", "name", "pid", "tid", "ts", "dur"],
             "properties": {"ph": {"const": "X"}, "name": {"type": "string"},
                            "cat": {"type": "string"}, "pid": _ID, "tid": _ID, "ts": _NUM,
                            "dur": {"type": "number", "minimum": 0}, "args": {"type": "object"}}},
            {"type": "object", "required": ["ph", "name", "pid", "ts", "s"],
             "properties": {"ph": {"const": "i"}, "s": {"enum": ["g", "p", "t"]},
                            "name": {"type": "string"}, "pid": _ID, "tid": _ID, "ts": _NUM,
                            "args": {"type": "object"}}},
            {"type": "object", "required": ["ph", "name", "pid", "ts", "args"],
             "properties": {"ph": {"const": "C"}, "name": {"type": "string"}, "pid": _ID,
                            "ts": _NUM, "args": {"type": "object",
                                                 "additionalProperties": _NUM}}},
            {"type": "object", "required": ["ph", "name", "pid", "args"],
             "properties": {"ph": {"const": "M"},
                            "name": {"enum": ["process_name", "process_sort_index",
                                              "thread_name", "thread_sort_index"]},
                            "pid": _ID, "tid": _ID, "args": {"type": "object"}}},
        ]}},
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
    },
}


@pytest.fixture(scope="module")
def amp_run(tmp_path_factory):
    """A small CPU run with a GradScaler that skips steps (so it has findings) and a window."""
    path = tmp_path_factory.mktemp("export") / "run"
    with dsprof.profile(path, schedule=dsprof.schedule(wait=1, active=2), quiet=True):
        model = torch.nn.Linear(8, 8)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)
        for step in range(8):
            x = torch.randn(4, 8)
            if step in (4, 6):
                x[0, 0] = float("inf")
            scaler.scale(model(x).sum()).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    return path


def test_chrome_trace_is_valid_and_holds_ops_steps_memory_and_findings(amp_run, tmp_path):
    # WHEN the run is exported for chrome://tracing
    with dsprof.load(amp_run) as run:
        path, n = write_trace(run, "chrome", tmp_path / "t.json")
    doc = json.loads(path.read_text())
    # THEN it follows the Trace Event Format
    jsonschema.validate(doc, CHROME_TRACE_SCHEMA)
    events = doc["traceEvents"]
    assert len(events) == n
    ops = [e for e in events if e["ph"] == "X" and e.get("cat") == "cpu_op"]
    assert any(e["name"] == "aten::addmm" and e["args"].get("phase") == "forward" for e in ops)
    steps = {e["name"]: e for e in events if e.get("cat") == "step"}
    assert len(steps) == 8 and steps["step 4"]["args"]["skipped"] is True
    assert any(e["ph"] == "C" for e in events)
    # AND each skipped step carries the finding, at that step's time
    marks = [e for e in events if e.get("cat") == "dsprof.finding"
             and e["args"]["kind"] == "amp.skipped_steps"]
    assert sorted(m["ts"] for m in marks) == sorted(
        steps[f"step {s}"]["ts"] for s in (4, 6))
    assert min(e["ts"] for e in events if "ts" in e) == 0.0


def test_perfetto_is_the_same_trace_gzip_compressed(amp_run, tmp_path):
    # WHEN exported through the CLI with the default path
    res = dsprof_cli("export", str(amp_run), "--format", "perfetto")
    assert res.code == 0, res.stderr
    path = amp_run / "trace.perfetto.json.gz"
    assert str(path) in res.stderr
    doc = json.loads(gzip.decompress(path.read_bytes()))
    jsonschema.validate(doc, CHROME_TRACE_SCHEMA)
    with dsprof.load(amp_run) as run:
        assert len(doc["traceEvents"]) == len(build_trace(run)["traceEvents"])


def _null_columns(table_dir, keep: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> None:
    """Every part of a table with its columns ``only`` (or all but ``keep``) set to NULL, the
    schema unchanged."""
    for part in table_dir.glob("*.parquet"):
        data = pq.read_table(part)
        for i, field in enumerate(data.schema):
            if field.name not in keep and (not only or field.name in only):
                data = data.set_column(i, field, pa.nulls(len(data), field.type))
        pq.write_table(data, part)


def test_null_thread_and_step_times_still_export(amp_run, tmp_path):
    # GIVEN a copy of the run whose ops have a NULL thread and whose steps are NULL but their
    # rank (a run directory is data: a fuzz sweep's edit with pyarrow; both were a TypeError,
    # int(None) and None - int, exit status 1)
    run = tmp_path / "run"
    shutil.copytree(amp_run, run, ignore=shutil.ignore_patterns("trace.*"))
    _null_columns(run / "tables" / "ops", only=("thread",))
    _null_columns(run / "tables" / "steps", keep=("rank",))
    # WHEN it is exported for Perfetto
    res = dsprof_cli("export", "-f", "perfetto", str(run))
    # THEN the trace is written, valid, its ops on thread 0 and no step without a time in it
    assert res.code == 0 and "Traceback" not in res.stderr, res.stderr
    doc = json.loads(gzip.decompress((run / "trace.perfetto.json.gz").read_bytes()))
    jsonschema.validate(doc, CHROME_TRACE_SCHEMA)
    ops = [e for e in doc["traceEvents"] if e.get("cat") == "cpu_op"]
    assert ops and {e["tid"] for e in ops} == {0}
    assert not [e for e in doc["traceEvents"] if e.get("cat") == "step"]


def test_ranks_are_merged_into_one_trace():
    # GIVEN an imported 2-rank GPU trace set
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        run_dir, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")], Path(tmp) / "run")
        with dsprof.load(run_dir.path) as run:
            doc = build_trace(run)
    jsonschema.validate(doc, CHROME_TRACE_SCHEMA)
    events = doc["traceEvents"]
    # THEN both ranks are processes of one trace, each with its kernels on stream tracks
    assert {e["pid"] for e in events} == {0, 1}
    names = {(e["pid"], e["args"]["name"]) for e in events if e["name"] == "process_name"}
    assert names == {(0, "rank 0"), (1, "rank 1")}
    for rank in (0, 1):
        assert any(e["pid"] == rank and e.get("cat", "").startswith("kernel.") for e in events)


def test_tensorboard_scalars_read_back_with_tensorboards_reader(amp_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with dsprof.load(amp_run) as run:
        out, points = write_tensorboard(run, tmp_path / "tb")
        durs = [d / 1e6 for (d,) in run.sql("SELECT dur_ns FROM steps ORDER BY step")]
    acc = EventAccumulator(str(out / "rank0"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"step/time_ms", "step/steps_per_s", "memory/rss_mib", "amp/loss_scale",
            "amp/skipped"} <= tags
    times = acc.Scalars("step/time_ms")
    assert [e.step for e in times] == list(range(8))
    assert [e.value for e in times] == pytest.approx(durs, rel=1e-6)
    assert [e.step for e in acc.Scalars("amp/skipped") if e.value == 1.0] == [4, 6]
    assert acc.Scalars("amp/loss_scale")[-1].value == 2.0**18
    assert points >= 8 * 5


def test_tensorboard_comm_share_when_a_comms_table_exists(amp_run, tmp_path, monkeypatch):
    # GIVEN a comms table beside the steps (the collectives collector writes one; faked here
    # with the columns the export reads)
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dsprof import schema

    comms = schema.Table("comms", "test", (schema.Column("rank", pa.int32(), ""),
                                           schema.Column("step", pa.int64(), ""),
                                           schema.Column("dur_ns", pa.int64(), "")))
    monkeypatch.setitem(schema.TABLES, "comms", comms)
    run_copy = tmp_path / "run"
    import shutil

    shutil.copytree(amp_run, run_copy)
    with dsprof.load(run_copy) as run:
        dur3 = run.sql("SELECT dur_ns FROM steps WHERE step = 3")[0][0]
    (run_copy / "tables" / "comms").mkdir()
    pq.write_table(comms.build({"rank": [0, 0], "step": [3, 3], "dur_ns": [dur3 // 4, dur3 // 4]}),
                   run_copy / "tables" / "comms" / "rank0.parquet")
    # WHEN exported
    with dsprof.load(run_copy) as run:
        out, _ = write_tensorboard(run, tmp_path / "tb")
    acc = EventAccumulator(str(out / "rank0"))
    acc.Reload()
    # THEN the step's collective time over its duration is plotted
    (point,) = acc.Scalars("comm/share")
    assert point.step == 3 and point.value == pytest.approx(0.5, rel=1e-3)
