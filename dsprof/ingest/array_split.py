"""Split a Kineto trace's ``traceEvents`` straight from its JSON text, without first decoding
the whole document into one ``msgspec.Raw`` per event.

The usual path (:meth:`KinetoTrace.split <dsprof.ingest.trace_file.KinetoTrace.split>`)
reads the document twice: once to find where each event lies (a list of ``Raw`` slices, 24 ms
of the ~280 ms of CPU that ingest of the 27.7 MB kineto_resnet50_v100_autograd trace costs),
then a chunk of events at a time into structs. Here the chunk boundaries are guessed from the
text instead: from a byte offset, the next ``}`` , ``{`` (whitespace allowed) is taken as the
end of one event and the start of the next. A guess is never trusted, only checked by the
decode itself: a chunk starts at a true event start (the first one does; by induction, so
does every next one), so ``[`` + chunk + ``]`` is valid JSON only when the guessed ``}``
closes a top-level event. A ``}`` inside a string leaves that string unterminated, one inside
a nested object leaves a bracket open, and either way the chunk fails to decode; the next
candidate is then tried. The end of the array is the last ``}`` ``]`` near the end of the document
up to which the events decode, and the document's other fields are decoded from the text around the array.

Anything unexpected (no ``"traceEvents": [`` key, a second one, an empty array, an event
that does not decode after a few candidates: a malformed event looks the same) returns None,
and the caller takes the usual path, which reports errors as it always did. So for every
input the result is the usual path's result, only cheaper to get.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from dsprof.ingest.chunk_spans import ChunkSpans
from dsprof.ingest.events import CHUNK_EVENTS, _Accumulator
from dsprof.ingest.split_trace import SplitTrace
from dsprof.ingest.trace_file import KinetoTrace, MemoryTimelineRaw, parse
from dsprof.ingest.trace_schema import DECODER, EVENTS_DECODER

# (JSON's whitespace only: ``\s`` would also take bytes a JSON decoder refuses)
_KEY = re.compile(rb'"traceEvents"[ \t\r\n]*:[ \t\r\n]*\[[ \t\r\n]*')
_BETWEEN = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")
_CLOSE = re.compile(rb"\}[ \t\r\n]*\]")
# text decoded at a time: as many bytes as events.CHUNK_EVENTS events of the last chunk took
# (the event count found fastest; a chunk's structs in memory grow with its events), at most
# CHUNK_EVENTS * MAX_EVENT_BYTES. A fixed 1.4 MB held 6,250 of hta_v100_1rank's small events
# (peak 1.94x the trace, 1.83x before); sized by the last chunk alone, one after a run of
# events with call stacks held several times 4,096 small ones (kineto_resnet50_v100_mem: 1.68x
# and 1.74x, 1.43x and 1.48x before)
MAX_EVENT_BYTES = 256
FIRST_EVENT_BYTES = MAX_EVENT_BYTES
# candidate boundaries tried per chunk, and candidate ends of the array, before giving up
_TRIES = 8
# the document after the array: a few short fields in every Kineto trace
_TAIL_BYTES = 1 << 16
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def parse_split(path: Path, owned: list[Any]
                ) -> tuple[KinetoTrace | MemoryTimelineRaw, SplitTrace | None]:
    """``owned = [the decompressed file]`` parsed, and split when :func:`split_in_place`
    can do it (else the split is None: :meth:`KinetoTrace.split` does it, as before). Either
    way ``owned`` is emptied: the buffer belongs to the result.

    Raises:
        TraceFormatError: as :func:`~dsprof.ingest.trace_file.parse`.
    """
    if bytes(owned[0][:4096]).lstrip()[:1] == b"{":
        done = split_in_place(path, owned)
        if done is not None:
            return done
    return parse(path, owned.pop()), None


def split_in_place(path: Path, owned: list[Any]) -> tuple[KinetoTrace, SplitTrace] | None:
    """The trace's metadata (as :class:`KinetoTrace`, without events) and its events split
    (:class:`SplitTrace`), from ``owned = [buffer]``, the decompressed JSON of a document
    that starts with ``{``; None when the text does not allow it (module docstring), with
    ``owned`` left as it was. On success ``owned`` is emptied and the buffer dropped as soon
    as the last chunk is decoded, before the columns are joined."""
    buffer = owned[0]
    found = _KEY.search(buffer)
    if found is None or bytes(buffer[found.end():found.end() + 1]) != b"{" or \
            bytes(buffer[found.start() - 1:found.start()]) == b"\\":
        return None
    first = found.end()
    tail_from = max(first, len(buffer) - _TAIL_BYTES)
    tail = bytes(buffer[tail_from:])
    head = bytes(buffer[:found.start()])
    if b'"traceEvents"' in head:  # a second key: not the document msgspec would read
        return None
    spans = ChunkSpans(buffer)
    acc = _Accumulator()
    pos = first
    ends = [tail_from + i for i in _array_ends(tail)]
    per_event: float = FIRST_EVENT_BYTES
    while ends and pos != ends[0]:
        chunk_bytes = max(int(min(per_event, MAX_EVENT_BYTES) * CHUNK_EVENTS), 1)
        events, after = _next_chunk(spans, pos, ends[0], chunk_bytes) if pos < ends[0] \
            else (None, pos)
        if events is None:  # no boundary before this `]` decodes: the array ends earlier
            ends.pop(0)
            continue
        acc.add(events)
        per_event = (after - pos) / len(events)  # (the last chunk's: sizes drift along a trace)
        del events
        pos = after
    if not ends or b'"traceEvents"' in tail[ends[0] + 1 - tail_from:]:
        return None
    end = ends[0]
    try:
        doc = DECODER.decode(head + b'"traceEvents": []' + tail[end + 1 - tail_from:])
    except _DECODE_ERRORS:
        return None
    # every reference to the buffer (the key's match holds one too) goes before the columns
    # are joined, so that its pages are unmapped first
    owned.clear()
    spans.release()
    del buffer, found
    return KinetoTrace(path, doc), acc.finish()


def _array_ends(tail: bytes) -> list[int]:
    """Offsets in ``tail`` of the last few ``]`` that follow a ``}`` (whitespace between),
    last first: where the array of events may end. After it Kineto writes a few short fields
    (one a list of log lines, full of ``]``; other writers may put a list of objects there),
    so the array's end is the last of these that a chunk of events decodes up to."""
    return [m.end() - 1 for m in _CLOSE.finditer(tail)][::-1][:_TRIES]


def _next_chunk(spans: ChunkSpans, pos: int, end: int, chunk_bytes: int
                ) -> tuple[list[Any] | None, int]:
    """(decoded events, where the next chunk starts: ``end`` after the last one) for the
    chunk of about ``chunk_bytes`` from ``pos``, an event start, if the array ends at
    ``end``; (None, ``pos``) when no candidate boundary up to ``end`` decodes."""
    search = pos + chunk_bytes
    for _ in range(_TRIES):
        cut = _BETWEEN.search(spans.buffer, search, end) if search < end else None
        hi = _trailing_end(spans, pos, end) if cut is None else cut.start() + 1
        try:
            events = EVENTS_DECODER.decode(spans.span(pos, hi))
        except _DECODE_ERRORS:
            if cut is None:
                break
            search = cut.end()
            continue
        return events, (end if cut is None else cut.end() - 1)
    return None, pos


def _trailing_end(spans: ChunkSpans, pos: int, end: int) -> int:
    """``end`` less the whitespace before it (the array's ``]``)."""
    hi = end
    while hi > pos and spans.buffer[hi - 1] in b" \t\r\n":
        hi -= 1
    return hi
