"""array_split: events split straight from the trace's text give the columns of the usual split
(parse, then a chunk of Raw events at a time), whatever the text puts where a chunk boundary is
guessed; and anything it cannot vouch for goes the usual way, with the usual errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from dsprof.errors import TraceFormatError
from dsprof.ingest import array_split
from dsprof.ingest.array_split import parse_split, split_in_place
from dsprof.ingest.pipeline import ingest_run
from dsprof.ingest.trace_file import parse, read_bytes
from dsprof.rundir import RunDir
from tests.conftest import trace_dir
from tests.unit.test_events_split import _assert_same_split


def _usual(path: Path, text: bytes):
    doc = parse(path, text)
    return doc, doc.split()


def _in_place(path: Path, text: bytes):
    owned = [text]
    done = split_in_place(path, owned)
    assert (done is None) == bool(owned)  # the buffer is handed over only on success
    return done


@pytest.mark.parametrize("folder", ["hta_a100_2rank_nccl_r0", "kineto_resnet50_v100_mem"])
def test_real_traces_split_in_place_as_usual(folder):
    # GIVEN a real trace (current Kineto with a log list after the events; the 2021 format)
    path = min(trace_dir(folder).glob("*.json.gz"))
    text = read_bytes(path)
    # WHEN it is split straight from its text
    done = _in_place(path, text)
    # THEN the same columns and metadata as the usual path
    assert done is not None
    doc, want = _usual(path, text)
    assert want.n_events > 10_000
    _assert_same_split(done[1], want)
    assert done[0].metadata == doc.metadata and done[0].base_ns == doc.base_ns


def _event(i: int, name: str, args: dict | None = None) -> dict:
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": 1, "ts": i, "dur": 1,
            "args": {"External id": i, **(args or {})}}


def test_boundaries_guessed_inside_strings_and_nested_objects(tmp_path, monkeypatch):
    # GIVEN events whose text holds `}, {` inside names and inside nested lists of objects,
    # and `}]` inside an event, then an array of objects and log lines full of `]` after the
    # events, with chunks of one event: a guess at every candidate
    events = [_event(i, f"op}}, {{{i}" if i % 3 else "aten::mm",
                     {"Input Dims": [[2, 2]], "objs": [{"a": i}, {"b": "}, {"}]})
              for i in range(200)]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"schemaVersion": 1, "traceEvents": events,
                                "deviceProperties": [{"id": 0}, {"id": 1}],
                                "INFO": ["x.cpp:12] }]", "y.cpp:3] done}, {]"]}, indent=1))
    monkeypatch.setattr(array_split, "CHUNK_EVENTS", 1)
    monkeypatch.setattr(array_split, "FIRST_EVENT_BYTES", 1)
    monkeypatch.setattr(array_split, "MAX_EVENT_BYTES", 1)
    text = read_bytes(path)
    # WHEN it is split straight from its text
    done = _in_place(path, text)
    # THEN every event, once, in order, as the usual path has them
    assert done is not None
    doc, want = _usual(path, text)
    _assert_same_split(done[1], want)
    assert done[1].host.name[:3] == ["aten::mm", "op}, {1", "op}, {2"]
    assert done[0].metadata == doc.metadata


@pytest.mark.parametrize("text", [
    b'{"traceEvents": []}',  # no event
    b'{"a\\"traceEvents": [{"ph": "X"}], "traceEvents": []}',  # the key inside another key
    b'{"traceEvents": [{"ph": "X"}], "traceEvents": []}',  # twice: msgspec reads the last
    b'{"traceEvents": [{"ph": "X", "ts": "soon"}]}',  # a malformed event
    b'{"traceEvents": [{"ph": "X"}\x0c, {"ph": "X"}]}',  # a byte JSON does not allow
    b'{"other": [{"ph": "X"}]}',  # no traceEvents at all
])
def test_what_it_cannot_vouch_for_goes_the_usual_way(tmp_path, text):
    # GIVEN a document the text split cannot take as it is
    path = tmp_path / "t.json"
    # WHEN it is split straight from its text THEN it declines, the buffer left to the caller
    assert _in_place(path, text) is None
    # AND parse_split gives what parse gives: the document, or its error
    try:
        doc = parse(path, text)
    except TraceFormatError as exc:
        with pytest.raises(TraceFormatError, match=re.escape(str(exc))):
            parse_split(path, [text])
        return
    got, split = parse_split(path, [text])
    assert split is None and got.n_events == doc.n_events


def test_a_malformed_event_is_still_named_by_its_place_in_the_trace(tmp_path):
    # GIVEN a trace whose 17,001st event has a text timestamp, imported as a run
    events = [{"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": i, "dur": 1}
              for i in range(20_000)]
    events[17_000]["ts"] = "soon"
    run = RunDir.create(tmp_path / "run")
    raw = run.raw_dir(0)
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "t.json").write_text(json.dumps({"traceEvents": events}))
    # WHEN it is ingested THEN the usual path's error, with the event's index in the trace
    with pytest.raises(TraceFormatError, match=r"\$\.traceEvents\[17000\]\.ts"):
        ingest_run(run)


def test_the_buffer_is_let_go_before_the_columns_are_joined(monkeypatch):
    # GIVEN a trace's decompressed text, handed over to the split, which is watched at the
    # moment it joins the chunks' columns
    path = min(trace_dir("hta_a100_alexnet_small").glob("*.json.gz"))
    text = read_bytes(path)
    seen: list[int] = []

    class Watched(array_split._Accumulator):
        def finish(self):
            seen.append(sys.getrefcount(text))
            return super().finish()

    monkeypatch.setattr(array_split, "_Accumulator", Watched)
    alone = sys.getrefcount(text)
    # WHEN it is split straight from its text
    assert split_in_place(path, [text]) is not None
    # THEN by then nothing of the split refers to the text (its pages can go first: ingest's
    # peak is the text or the columns, not both)
    assert seen == [alone]
