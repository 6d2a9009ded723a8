"""Resource limits of the decoders: what a trace, memory timeline or snapshot may cost.

Run directories and traces come from other people, so every decoder has a bound that no real
input reaches and a hostile one cannot get past without being refused with one line
(:class:`~dsprof.errors.TraceFormatError`, exit 2) instead of taking the machine's memory or
minutes of CPU. The figures, and how they were chosen, are in docs/security.md.

Measured on the real traces of ../shared/traces (2026-12): gzip expands them 7.5x to 30x, and
the largest expands to 35 MB. A zip bomb expands 1000x. The limits:

- ``MAX_EXPANSION`` (100x) applies past ``EXPANSION_FLOOR`` (256 MiB of output), so a small
  file that happens to compress very well is never refused;
- ``max_file_bytes()`` caps the decompressed size of one file (default 16 GiB; more does not
  fit a machine that ingests it anyway); ``DSPROF_MAX_TRACE_BYTES`` raises or lowers it;
- JSON nesting is bounded by the decoders themselves (orjson stops at 1024 levels, msgspec at
  Python's recursion limit; both are turned into one line in ``trace_file``);
- a snapshot pickle may expand (shared references counted every time they are reached, as any
  walk over it would) to at most ``MAX_SNAPSHOT_OBJECTS`` objects, nested at most
  ``MAX_SNAPSHOT_DEPTH`` deep.
"""

from __future__ import annotations

import os

MAX_EXPANSION = 100
EXPANSION_FLOOR = 256 << 20
DEFAULT_MAX_FILE_BYTES = 16 << 30
MAX_SNAPSHOT_OBJECTS = 100_000_000
MAX_SNAPSHOT_DEPTH = 64


def max_file_bytes() -> int:
    """The decompressed-size cap of one input file (``DSPROF_MAX_TRACE_BYTES``, bytes)."""
    text = os.environ.get("DSPROF_MAX_TRACE_BYTES", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return DEFAULT_MAX_FILE_BYTES


def max_expanded_bytes(compressed: int) -> int:
    """How far ``compressed`` bytes of gzip may expand before they are refused."""
    return min(max_file_bytes(), max(EXPANSION_FLOOR, MAX_EXPANSION * compressed))
