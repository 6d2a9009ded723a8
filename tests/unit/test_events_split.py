"""events.split_raw: a trace decoded a chunk at a time gives the columns of one decode, holds
no reference to the trace's buffer once split, and names a malformed event by its place in the
whole trace."""

from __future__ import annotations

import json
import sys

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from dsprof.errors import TraceFormatError
from dsprof.ingest.events import split, split_raw
from dsprof.ingest.split_trace import SplitTrace
from dsprof.ingest.trace_file import parse, read_bytes
from tests.conftest import trace_dir


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, pa.Array):
        return a.equals(b)
    return a == b


def _assert_same_split(got: SplitTrace, want: SplitTrace) -> None:
    for part in ("host", "device", "memory"):
        g, w = getattr(got, part), getattr(want, part)
        for name in vars(w):
            if name == "args":
                for kind in ("arrow", "lists"):
                    gd, wd = getattr(g.args, kind), getattr(w.args, kind)
                    assert sorted(gd) == sorted(wd)
                    assert all(_same(gd[k], wd[k]) for k in wd), (part, kind)
                assert g.args.objects == w.args.objects, part
            else:
                assert _same(getattr(g, name), getattr(w, name)), (part, name)
    assert got.skipped == want.skipped
    assert got.n_events == want.n_events and _same(got.ev_idx, want.ev_idx)


@pytest.mark.parametrize("folder", ["kineto_resnet50_v100_mem", "hta_a100_2rank_nccl_r0"])
def test_chunks_give_the_columns_of_one_decode(folder):
    # GIVEN a real trace (memory instants, collectives, kernels) and its events decoded at once
    path = min(trace_dir(folder).glob("*.json.gz"))
    doc = parse(path, read_bytes(path))
    whole = split(doc.events)
    # WHEN it is split in chunks of 1,000 events, from spans of the buffer and from joins
    spans = split_raw(doc.doc.traceEvents, doc.buffer, chunk=1000)
    joins = split_raw(doc.doc.traceEvents, None, chunk=1000)
    # THEN the same columns, row for row
    assert whole.n_events > 10_000
    _assert_same_split(spans, whole)
    _assert_same_split(joins, whole)


def test_split_keeps_no_reference_to_the_trace_buffer():
    # GIVEN a trace's decompressed bytes, decoded (its raw events are views of them)
    path = min(trace_dir("kineto_resnet50_v100_mem").glob("*.json.gz"))
    data = read_bytes(path)
    alone = sys.getrefcount(data)
    doc = parse(path, data)
    assert sys.getrefcount(data) > alone + 1000
    # WHEN it is split and the decoded document dropped
    parsed = doc.split()
    del doc
    # THEN nothing the columns hold keeps the buffer alive (it can be freed before the
    # tables are built), though the FLOPs rows kept their shapes
    assert sys.getrefcount(data) == alone
    assert parsed.host.args.objects
    assert any(len(a.input_dims) for a in parsed.host.args.objects.values())


def test_a_malformed_event_is_named_by_its_place_in_the_trace(tmp_path):
    # GIVEN a trace whose 17,001st event has a text timestamp (the third chunk)
    events = [{"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": i, "dur": 1}
              for i in range(20_000)]
    events[17_000]["ts"] = "soon"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    doc = parse(path, read_bytes(path))
    # WHEN it is split THEN one error, with the event's index in the whole trace
    with pytest.raises(TraceFormatError, match=r"malformed trace event .*\$\.traceEvents\[17000\]\.ts"):
        doc.split()
    with pytest.raises(msgspec.ValidationError):
        split_raw(doc.doc.traceEvents)


def test_routes_of_phases_and_categories_first_seen_in_later_chunks():
    # GIVEN events whose (phase, category) pairs appear chunk after chunk: one category under
    # two phases, the same category in two spellings, a flow pair, metadata, an unknown
    # category, and instants that are and are not [memory]
    def ev(ph, cat, name="n", **more):
        return json.dumps({"ph": ph, "cat": cat, "name": name, "pid": 1, "tid": 2, "ts": 1,
                           "dur": 1, **more}).encode()

    raws = [ev("X", "cpu_op"), ev("s", "ac2g"), ev("X", "Kernel"), ev("f", "ac2g"),
            ev("X", "kernel"), ev("i", "cpu_op", "mark"), ev("M", None), ev("X", "Runtime"),
            ev("X", "gpu_memcpy"), ev("X", "weird"), ev("i", None, "[memory]"),
            ev("X", "cpu_op"), ev("X", "user_annotation")]
    events = [msgspec.Raw(r) for r in raws]
    # WHEN they are split two at a time (each chunk meets new phases and categories) and at once
    small = split_raw(events, None, chunk=2)
    whole = split_raw(events, None, chunk=len(events))
    # THEN each event goes where its own pair sends it, whatever the chunk
    _assert_same_split(small, whole)
    assert small.host.cat == ["cpu_op", "cuda_runtime", "cpu_op", "user_annotation"]
    assert small.device.kind == ["kernel", "kernel", "memcpy"]
    assert len(small.memory.ts) == 1
    assert small.skipped == {"ph:s": 1, "ph:f": 1, "weird": 1, "instant:mark": 1}
    assert small.n_events == len(raws)
