"""session.json's compile records -> the ``compiles`` table (ingest/compiles.py): a run
directory is data, so what the collector would not write is read as nulls."""

from __future__ import annotations

from dsprof.ingest.compiles import compiles_from_record
from dsprof.schema import COMPILES

SPANS = [(0, 0, 100), (1, 100, 200)]


def test_the_records_become_rows_with_their_step_frame_and_attempt():
    rec = {"compile": {"compiles": [
        {"compile_id": "0/0", "code": "f", "site": "train.py:7", "start_ns": 50,
         "dur_ns": 10, "backward": False},
        {"compile_id": "0/1_1", "code": "f", "site": "train.py:7", "start_ns": 150,
         "dur_ns": 5, "recompile_reason": "0/0: G['STEP'] == 0"}]}}
    cols = compiles_from_record(rec, 3, SPANS)
    assert cols["frame"] == [0, 0] and cols["attempt"] == [0, 1] and cols["step"] == [0, 1]
    assert cols["rank"] == [3, 3]
    COMPILES.build(cols)  # the schema takes it


def test_fields_that_are_not_what_the_collector_writes_are_nulls():
    rec = {"compile": {"compiles": [
        {"compile_id": "'; DROP TABLE steps; --", "code": 7, "site": ["x"], "start_ns": "1",
         "dur_ns": -5, "backward": "yes", "recompile_reason": "x" * 10_000},
        "not a record", None]}}
    cols = compiles_from_record(rec, 0, SPANS)
    assert len(cols["rank"]) == 1
    assert cols["frame"] == [None] and cols["attempt"] == [None]
    assert cols["code"] == [None] and cols["site"] == [None] and cols["start_ns"] == [None]
    assert cols["step"] == [None] and cols["dur_ns"] == [None] and cols["backward"] == [None]
    assert len(cols["recompile_reason"][0]) == 400
    COMPILES.build(cols)
    # AND a record with no list at all is no rows
    assert compiles_from_record({"compile": {"compiles": "x"}}, 0, SPANS)["rank"] == []
    assert compiles_from_record({}, 0, SPANS)["rank"] == []
