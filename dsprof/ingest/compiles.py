"""``session.json``'s ``compile.compiles`` (Dynamo's record of each compilation,
collectors/compile_metrics.py) -> the ``compiles`` table.

Nothing in a run directory is trusted: a row whose fields are not what the collector writes
is read as nulls there, and an id that is not ``frame/attempt`` gives no frame.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from dsprof.ingest.steps import step_column

MAX_ROWS = 4096  # the collector keeps as many; a record with more was not written by it
MAX_TEXT = 400
# "3/2", and "3/2_1" for Dynamo's restart of a compilation after a graph break
_COMPILE_ID = re.compile(r"^(?:\[[^\]]*\])?(\d{1,9})/(\d{1,9})(?:_\d{1,9})?$")


def _str(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and -(1 << 62) < value < (1 << 62) else None


def compiles_from_record(record: dict[str, Any], rank: int,
                         step_spans: list[tuple[int, int, int]]) -> dict[str, Any]:
    compile_rec = record.get("compile")
    rows = compile_rec.get("compiles") if isinstance(compile_rec, dict) else None
    rows = [r for r in rows[:MAX_ROWS] if isinstance(r, dict)] if isinstance(rows, list) else []
    ids = [_str(r.get("compile_id")) for r in rows]
    parsed = [_COMPILE_ID.match(i) if i else None for i in ids]
    starts = [_int(r.get("start_ns")) for r in rows]
    steps = step_column(np.asarray([s if s is not None else -1 for s in starts], np.int64),
                        step_spans)
    steps = [None if s is None else step for s, step in zip(starts, steps.to_pylist())]
    backward = [r.get("backward") for r in rows]
    return {
        "rank": [rank] * len(rows),
        "compile_id": ids,
        "frame": [int(m.group(1)) if m else None for m in parsed],
        "attempt": [int(m.group(2)) if m else None for m in parsed],
        "code": [_str(r.get("code")) for r in rows],
        "site": [_str(r.get("site")) for r in rows],
        "step": steps,
        "start_ns": starts,
        "dur_ns": [d if (d := _int(r.get("dur_ns"))) is None or d >= 0 else None for r in rows],
        "backward": [b if isinstance(b, bool) else None for b in backward],
        "recompile_reason": [_str(r.get("recompile_reason")) for r in rows],
        "fail_type": [_str(r.get("fail_type")) for r in rows],
        "fail_reason": [_str(r.get("fail_reason")) for r in rows],
    }
