"""Runs of consecutive raw events, copied out of the buffer they are slices of as one JSON
array each, ready to decode.

msgspec decodes ``traceEvents`` as a list of ``Raw`` slices of the trace's buffer; a chunk of
them becomes ``[`` + the buffer from the chunk's first event to the end of its last + ``]``
(the events and the separators between them), one copy instead of a join of every slice.
Only where each chunk starts and ends is kept (:meth:`ChunkSpans.bounds`), so the ``Raw``
objects themselves (~56 bytes per event) can be freed before the first chunk is decoded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from msgspec import Raw


class ChunkSpans:
    """Where slices of one buffer lie in it, to copy a run of consecutive events at once."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = memoryview(buffer)
        self.base = _address(buffer)
        # one scratch buffer for every chunk: a fresh one per chunk costs its page faults
        # (the chunk's structs copy what they keep, so nothing refers to it after a chunk)
        self.scratch = np.empty(0, np.uint8)

    def bounds(self, raws: list[Raw], chunk: int) -> list[tuple[int, int]] | None:
        """(start, end) offsets in the buffer of each run of ``chunk`` events of ``raws``;
        None if some run is not a slice of the buffer in order (then the caller joins the
        events themselves)."""
        out = []
        for lo in range(0, len(raws), chunk):
            first, last = raws[lo], raws[min(lo + chunk, len(raws)) - 1]
            start = _address(first) - self.base
            end = _address(last) - self.base + len(last)
            if not 0 <= start < end <= len(self.buffer):
                return None
            out.append((start, end))
        return out

    def array(self, first: Raw, last: Raw) -> memoryview | None:
        """``[`` + the buffer from ``first`` to the end of ``last`` + ``]``; None if they are
        not slices of the buffer (in order). Valid until the next call."""
        lo = _address(first) - self.base
        hi = _address(last) - self.base + len(last)
        if not 0 <= lo < hi <= len(self.buffer):
            return None
        return self.span(lo, hi)

    def span(self, lo: int, hi: int) -> memoryview:
        """``[`` + ``buffer[lo:hi]`` + ``]`` (offsets from :meth:`bounds`). Valid until the
        next call."""
        n = hi - lo + 2
        if len(self.scratch) < n:
            self.scratch = np.empty(n + (n >> 2), np.uint8)
        out = self.scratch[:n]
        out[0], out[-1] = 0x5B, 0x5D  # [ ]
        out[1:-1] = np.frombuffer(self.buffer[lo:hi], np.uint8)
        return memoryview(out)

    def release(self) -> None:
        """Drop the buffer and the scratch copy (the buffer is freed if nothing else holds
        it)."""
        self.buffer = memoryview(b"")
        self.scratch = np.empty(0, np.uint8)


def _address(buf: Any) -> int:
    return int(np.frombuffer(buf, np.uint8).ctypes.data)
