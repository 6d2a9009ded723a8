"""Read one trace file: Kineto / torch.profiler JSON (plain or gzip), or the raw memory
timeline that ``torch.profiler.profile.export_memory_timeline(...raw...)`` writes.

Anything else fails with one :class:`TraceFormatError` that names the file and the problem.
"""

from __future__ import annotations

import gzip
import mmap
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from dsprof.errors import TraceFormatError
from dsprof.ingest.limits import max_expanded_bytes, max_file_bytes
from dsprof.ingest.trace_schema import DECODER, EVENTS_DECODER, Event, TraceDoc

if TYPE_CHECKING:
    from dsprof.ingest.split_trace import SplitTrace

try:  # ISA-L inflates a trace ~2.5x as fast as zlib (0.022 s vs 0.055 s for 35 MB); same API
    from isal import isal_zlib as _inflate_lib

    INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflate_lib.error)
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _inflate_lib = zlib
    INFLATE_ERRORS = (zlib.error,)

GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class KinetoTrace:
    """A parsed Kineto trace.

    Args:
        path: where it came from.
        doc: the decoded trace (each event's raw JSON, plus the metadata dsprof reads).
        buffer: the decompressed JSON ``doc`` was decoded from (its raw events are slices of
            it); empty when not known.
    """

    path: Path
    doc: TraceDoc
    # the decompressed JSON that ``doc``'s raw events are slices of
    buffer: bytes | memoryview = b""

    @property
    def n_events(self) -> int:
        return len(self.doc.traceEvents)

    @property
    def events(self) -> list[Event]:
        """Every event decoded at once (for tools and tests; ingest uses :meth:`split`).

        Raises:
            TraceFormatError: an event is malformed.
        """
        try:
            return EVENTS_DECODER.decode(b"[" + b",".join(self.doc.traceEvents) + b"]")
        except msgspec.ValidationError as exc:
            raise TraceFormatError(f"{self.path}: malformed trace event ({exc})") from None

    def split(self, *, release: bool = False) -> SplitTrace:
        """The events as columns (:func:`dsprof.ingest.events.split_raw`), decoded a chunk at
        a time.

        Args:
            release: hand the events and the buffer over to the split, which frees them as
                soon as it is done with them (:func:`~dsprof.ingest.events.split_owned`):
                this trace then has no events left (``n_events`` is 0), only its metadata.

        Raises:
            TraceFormatError: an event is malformed.
        """
        from dsprof.ingest.events import split_owned

        owned = [self.doc.traceEvents, self.buffer or None]
        if release:
            self.doc.traceEvents, self.buffer = [], b""
        try:
            return split_owned(owned)
        except msgspec.ValidationError as exc:
            raise TraceFormatError(f"{self.path}: malformed trace event ({exc})") from None

    @property
    def metadata(self) -> dict[str, Any]:
        fields = ("schemaVersion", "deviceProperties", "distributedInfo", "baseTimeNanoseconds",
                  "record_shapes", "profile_memory", "with_stack")
        return {k: getattr(self.doc, k) for k in fields if getattr(self.doc, k) is not None}

    @property
    def base_ns(self) -> int:
        """Offset to add to ``ts`` (µs, times 1000) to reach the epoch clock (0 in old traces)."""
        base = self.doc.baseTimeNanoseconds
        return int(base) if isinstance(base, (int, float)) else 0

    @property
    def rank(self) -> int | None:
        info = self.doc.distributedInfo
        if isinstance(info, dict) and isinstance(info.get("rank"), int):
            return info["rank"]
        return None


@dataclass(frozen=True)
class MemoryTimelineRaw:
    """``export_memory_timeline`` raw records: ``[ts_ns | -1, action, bytes, category]``."""

    path: Path
    records: list[list[int]]


def _check_size(path: Path) -> int:
    """The file's size; a file over the size limit is refused before it is read (OSError
    when it cannot be stat'ed: the callers turn it into their message)."""
    size = path.stat().st_size
    if size > max_file_bytes():
        raise TraceFormatError(
            f"{path}: {size:,} bytes, over dsprof's limit of {max_file_bytes():,} bytes for "
            "one trace file (DSPROF_MAX_TRACE_BYTES raises it)")
    return size


def read_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped when it is gzip, within the limits of
    :mod:`dsprof.ingest.limits` (checked before reading and while inflating, never after).

    Raises:
        TraceFormatError: missing, unreadable, over the size limit, or a broken gzip stream.
    """
    with _reading(path):
        _check_size(path)
        data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        with _inflating(path):
            data = gunzip(data)
    return data


def read_mapped(path: Path) -> memoryview:
    """:func:`read_bytes`, into memory mapped for it alone rather than taken from malloc's heap
    (same checks, same errors). Ingest holds each trace this way: freeing it gives its pages
    back to the system at once, whatever the thread that read it and whatever malloc's state.
    A decompressed trace taken from the heap of a reader thread's arena, once malloc's mmap
    threshold had risen past its size (any earlier free of a block that large raises it),
    stayed resident after it was freed (glibc trims only the main arena's top), and the
    tables were built beside it: hta_v100_1rank peaked at 2.6x its 15.4 MB instead of 1.7x.

    Raises:
        TraceFormatError: missing, unreadable, over the size limit, or a broken gzip stream.
    """
    with _reading(path):
        size = _check_size(path)
        with path.open("rb") as fh:
            if fh.read(2) != GZIP_MAGIC:
                fh.seek(0)
                out = _Mapped(size, populate=True)
                out.length = fh.readinto(out.map) if size else 0
                return out.view()
            fh.seek(0)
            data = fh.read()
    with _inflating(path):
        return gunzip_mapped(data)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Reading ``path``: a missing or unreadable file becomes one TraceFormatError line."""
    try:
        yield
    except FileNotFoundError:
        raise TraceFormatError(f"{path}: no such file") from None
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None


@contextmanager
def _inflating(path: Path) -> Iterator[None]:
    """Gunzipping ``path``'s bytes: a stream past the expansion cap, truncated or corrupt
    becomes one TraceFormatError line."""
    try:
        yield
    except ExpansionLimit as exc:
        raise TraceFormatError(f"{path}: {exc}; dsprof refuses it (a real trace expands "
                               "7x to 30x; DSPROF_MAX_TRACE_BYTES raises the cap)") from None
    except (EOFError, gzip.BadGzipFile, *INFLATE_ERRORS) as exc:
        raise TraceFormatError(
            f"{path}: the gzip stream is truncated or corrupt ({exc}); copy the file again"
        ) from None


_PRIVATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS if hasattr(mmap, "MAP_PRIVATE") else 0
# committing the pages of a map in one call costs half of faulting them in one by one
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


class _Mapped:
    """A growable anonymous memory map.

    Args:
        size: its first size.
        populate: commit that size at once (it is what will be written: a file's size, or
            the size a gzip trailer gives), not page by page as it is written.
    """

    def __init__(self, size: int, populate: bool = False) -> None:
        # private: a shared anonymous map cannot grow (its pages past the first size fault)
        flags = _PRIVATE | (_POPULATE if populate and _PRIVATE else 0)
        self.map = mmap.mmap(-1, max(size, 1), **({"flags": flags} if flags else {}))
        self.length = 0

    def write(self, data: bytes) -> None:
        end = self.length + len(data)
        if end > len(self.map):
            self.map.resize(max(end, 2 * len(self.map)))
        self.map[self.length:end] = data
        self.length = end

    def view(self) -> memoryview:
        return memoryview(self.map)[:self.length]


# real traces expand 7x to 30x (dsprof.ingest.limits)
_POPULATE_EXPANSION = 64
# compressed bytes inflated per call by gunzip_mapped: the output of one call (~14-30x that
# for a trace) stays a small block that malloc reuses from call to call
_IN_STEP = 4096


def gunzip_mapped(data: bytes) -> memoryview:
    """:func:`gunzip` into a memory map (:func:`read_mapped`), with the same refusal of output
    past the expansion limit: the input is inflated ``_IN_STEP`` bytes at a time, so a bomb is
    refused holding at most the cap plus what one step expands to (1032x, deflate's most)."""
    cap = max_expanded_bytes(len(data))
    hint = int.from_bytes(data[-4:], "little") if len(data) >= 18 else 0  # size mod 2**32
    # the trailer's size is committed at once only when it is a size a trace expands to (a
    # lying trailer then costs address space, not memory)
    out = _Mapped(hint, populate=hint <= _POPULATE_EXPANSION * len(data)) \
        if 0 < hint <= cap else _Mapped(_STEP)
    rest = memoryview(data)
    while len(rest):
        inflater = _inflate_lib.decompressobj(16 + zlib.MAX_WBITS)
        pos = 0
        while not inflater.eof:
            piece = rest[pos:pos + _IN_STEP]
            if not len(piece):
                raise EOFError("compressed file ended before the end-of-stream marker was "
                               "reached")
            pos += len(piece)
            chunk = inflater.decompress(piece)
            if out.length + len(chunk) > cap:
                raise ExpansionLimit(f"the gzip stream expands past {cap:,} bytes "
                                     f"(from {len(data):,})")
            out.write(chunk)
        left = inflater.unused_data
        rest = rest[pos:]
        if left or len(rest):
            rest = memoryview((left + bytes(rest)).lstrip(b"\x00"))  # zero padding is allowed
        if len(rest) and rest[:2] != GZIP_MAGIC:
            break  # trailing garbage after the last member, as gzip(1) ignores it
    return out.view()


_STEP = 32 << 20


class ExpansionLimit(ValueError):
    """A gzip stream that inflates past :func:`~dsprof.ingest.limits.max_expanded_bytes`."""


def gunzip(data: bytes) -> bytes:
    """Inflate every gzip member of ``data``, refusing output past the expansion limit.

    zlib stops at ``max_length`` bytes of output, so a stream built to expand to gigabytes
    costs at most the limit in memory and is refused as soon as it gets there: the size in the
    gzip trailer is written by whoever made the file and is not trusted. The CRC of each member
    is checked by zlib.

    Raises:
        ExpansionLimit: the output would pass the limit.
        EOFError: the stream ends inside a member (truncated).
        zlib.error (or isal's error): corrupt data or CRC.
    """
    cap = max_expanded_bytes(len(data))
    hint = int.from_bytes(data[-4:], "little") if len(data) >= 18 else 0  # size mod 2**32
    out: list[bytes] = []
    total = 0
    rest = data
    while rest:
        inflater = _inflate_lib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        while not inflater.eof:
            # In one call when the trailer's size is honest (one buffer, as fast as inflating
            # can be), else in steps: a bomb is refused holding at most the cap plus one step.
            step = hint + 1 if 0 < hint < cap else _STEP
            hint = 0
            chunk = inflater.decompress(pending, min(step, cap - total + 1))
            total += len(chunk)
            if total > cap:
                raise ExpansionLimit(f"the gzip stream expands past {cap:,} bytes "
                                     f"(from {len(data):,})")
            out.append(chunk)
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                raise EOFError("compressed file ended before the end-of-stream marker was "
                               "reached")
        rest = inflater.unused_data.lstrip(b"\x00")  # gzip allows zero padding after members
        if rest and rest[:2] != GZIP_MAGIC:
            break  # trailing garbage after the last member, as gzip(1) ignores it
    return out[0] if len(out) == 1 else b"".join(out)


def _orjson(data: bytes) -> tuple[Any, str | None]:
    try:
        return orjson.loads(data), None
    except orjson.JSONDecodeError as exc:
        return None, str(exc)
    except RecursionError:
        return None, "nested too deep"


def _decode_kineto(path: Path, data: bytes) -> KinetoTrace:
    try:
        return KinetoTrace(path, DECODER.decode(data), data)
    except msgspec.ValidationError as exc:
        if "traceEvents" in str(exc) and "missing required field" in str(exc):
            raise TraceFormatError(f"{path}: JSON, but not a torch.profiler/Kineto trace "
                                   "(it has no traceEvents list)") from None
        raise TraceFormatError(f"{path}: malformed trace event ({exc})") from None
    except RecursionError:
        raise TraceFormatError(f"{path}: JSON nested too deep to be a trace; dsprof refuses "
                               "it") from None
    except msgspec.DecodeError as exc:
        raise TraceFormatError(f"{path}: not valid JSON ({exc}); is it a torch.profiler "
                               "trace, and complete?") from None


def load(path: Path) -> KinetoTrace | MemoryTimelineRaw:
    """Parse ``path``.

    Raises:
        TraceFormatError: unreadable, truncated, not JSON, or JSON that is not a trace.
    """
    return parse(path, read_bytes(path))


def parse(path: Path, data: bytes | memoryview) -> KinetoTrace | MemoryTimelineRaw:
    """:func:`load` on the (decompressed) contents of ``path`` already read."""
    head = bytes(data[:4096]).lstrip()
    if not head:
        raise TraceFormatError(f"{path}: the file is empty; it is not a trace")
    if head[:1] == b"{":
        return _decode_kineto(path, data)
    doc, error = _orjson(data)
    if error is not None:
        raise TraceFormatError(
            f"{path}: not valid JSON ({error}); is it a torch.profiler trace, and complete?")
    if isinstance(doc, list) and _is_memory_timeline(doc):
        return MemoryTimelineRaw(path, doc)
    raise TraceFormatError(
        f"{path}: JSON, but neither a torch.profiler/Kineto trace nor a raw memory timeline"
    )


def _is_memory_timeline(doc: list[Any]) -> bool:
    if not doc:
        return False
    for rec in doc[:1000]:
        if not (isinstance(rec, list) and len(rec) == 4 and all(isinstance(v, int) for v in rec)):
            return False
    return True
