"""The vectorised ingest writes the same tables as the per-event ingest it replaced: every
column of every table, for every shared trace, hashes to the digest recorded from that
per-event code (``tests/data/ingest_digests.json``, see ``tests/ingest_digests.py``)."""

from __future__ import annotations

import json

import pytest

from tests.ingest_digests import DIGESTS, key, trace_digests, trace_files

TRACE_FILES = trace_files()
RECORDED = json.loads(DIGESTS.read_text())


@pytest.mark.skipif(not TRACE_FILES, reason="../shared/traces is absent")
@pytest.mark.parametrize("path", TRACE_FILES, ids=key)
def test_tables_match_the_per_event_ingest(path, tmp_path):
    # GIVEN the digests the per-event ingest recorded for this trace
    expected = RECORDED[key(path)]
    # WHEN it is imported now
    got = trace_digests(path, tmp_path)
    # THEN the same tables, columns, types and values
    assert sorted(got) == sorted(expected)
    for table, columns in expected.items():
        changed = {c: (d, got[table].get(c)) for c, d in columns.items()
                   if got[table].get(c) != d}
        assert not changed and sorted(got[table]) == sorted(columns), (table, changed)


def test_every_shared_trace_has_recorded_digests():
    # a trace added to ../shared/traces needs its digests recorded (from a trusted ingest)
    assert {key(p) for p in TRACE_FILES} <= set(RECORDED)
