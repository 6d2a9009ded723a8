"""What Dynamo says of each compilation it ran: the code it compiled, why it compiled it again
and whether it gave up, for the ``compiles`` table.

Dynamo keeps a record of each compilation (``torch._dynamo.utils.get_compilation_metrics()``:
the frame's code, ``recompile_reason``, the guard that failed, ``fail_type``/``fail_reason``
when it gave up, its wall-clock start), the text ``TORCH_LOGS=recompiles`` prints. It keeps the
last 64 only, and writes a compilation's record after its end callback has run, so the compile
watch reads the new records at each compilation's end and once more as the session ends.
Reading them is a copy of a list: nothing Dynamo does changes.

Why: a compiled function that reads a Python global that changes each step recompiled at each
of its first 8 calls (``G['STEP'] == 3``) and then ran uncompiled for the rest of the run
(``recompile_limit``), with one warning among the script's output; dsprof's step times showed
slow steps only.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from dsprof.frames import shown_path

MAX_ROWS = 4096  # a compile storm past this is said by the count kept in ``dropped``
MAX_TEXT = 400  # a reason or failure past this is cut (Dynamo's run to several KB)


class DynamoMetrics:
    """Dynamo's compilation records, read as they appear.

    Args:
        now_ns: the run clock (epoch ns from the monotonic clock); Dynamo stamps its records
            with the wall clock, so a start is moved onto the run clock by their difference
            at the time of reading.
    """

    def __init__(self, now_ns: Callable[[], int]):
        self.now_ns = now_ns
        self.rows: list[dict[str, Any]] = []
        self.dropped = 0
        self._seen: set[tuple[Any, ...]] = set()

    def harvest(self) -> None:
        """Keep the records not read yet. Only once Dynamo is imported (a run that never
        compiles never imports it)."""
        utils = sys.modules.get("torch._dynamo.utils")
        read = getattr(utils, "get_compilation_metrics", None)
        if read is None:
            return
        records = read()
        shift = self.now_ns() - time.time_ns()
        for rec in records:
            key = (getattr(rec, "compile_id", None), getattr(rec, "start_time_us", None),
                   getattr(rec, "is_forward", None))
            if key in self._seen:
                continue
            self._seen.add(key)
            if len(self.rows) >= MAX_ROWS:
                self.dropped += 1
                continue
            self.rows.append(_row(rec, shift))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _site(filename: Any, line: Any) -> str | None:
    if not isinstance(filename, str):
        return None
    return _text(f"{shown_path(filename)}:{_int(line) or 0}")


def _row(rec: Any, shift_ns: int) -> dict[str, Any]:
    start_us = _int(getattr(rec, "start_time_us", None))
    duration_us = _int(getattr(rec, "duration_us", None))
    if duration_us is None:  # older records: the frame's compile time in seconds
        seconds = getattr(rec, "entire_frame_compile_time_s", None)
        duration_us = int(seconds * 1e6) if isinstance(seconds, (int, float)) else None
    reason = getattr(rec, "fail_reason", None)
    forward = getattr(rec, "is_forward", None)
    return {
        "compile_id": _text(getattr(rec, "compile_id", None)),
        "code": _text(getattr(rec, "co_name", None)),
        "site": _site(getattr(rec, "co_filename", None), getattr(rec, "co_firstlineno", None)),
        "start_ns": None if start_us is None else start_us * 1000 + shift_ns,
        "dur_ns": None if duration_us is None else duration_us * 1000,
        "backward": None if forward is None else not bool(forward),
        "recompile_reason": _text(getattr(rec, "recompile_reason", None)),
        "fail_type": _text(getattr(rec, "fail_type", None)),
        # the first line: "Dynamo recompile limit exceeded"; the rest is Dynamo's hints
        "fail_reason": None if reason is None else _text(str(reason).strip().split("\n", 1)[0]),
    }


def recompile_limit() -> int | None:
    """Dynamo's ``recompile_limit`` (``cache_size_limit`` in older torch), read where Dynamo is
    imported."""
    config = sys.modules.get("torch._dynamo.config")
    for name in ("recompile_limit", "cache_size_limit"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
