"""Read one trace file: Kineto / torch.profiler JSON (plain or gzip), or the raw memory
timeline that ``torch.profiler.profile.export_memory_timeline(...raw...)`` writes.

Anything else fails with one :class:`TraceFormatError` that names the file and the problem.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson

from dsprof.errors import TraceFormatError
from dsprof.ingest.trace_schema import DECODER, Event, TraceDoc

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class KinetoTrace:
    """A parsed Kineto trace.

    Args:
        path: where it came from.
        doc: the decoded trace (events plus the metadata dsprof reads).
    """

    path: Path
    doc: TraceDoc

    @property
    def events(self) -> list[Event]:
        return self.doc.traceEvents

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


def read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TraceFormatError(f"{path}: no such file") from None
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gunzip(data)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise TraceFormatError(
                f"{path}: the gzip stream is truncated or corrupt ({exc}); copy the file again"
            ) from None
    return data


def gunzip(data: bytes) -> bytes:
    """``gzip.decompress``, about twice as fast on a single-member file.

    The gzip trailer holds the uncompressed size (mod 2**32), so zlib can inflate into one
    buffer of exactly that size, checking the CRC as it goes, instead of growing a list of
    blocks and joining them (what ``gzip.decompress`` does, then a second pass for the CRC).
    One-shot ``zlib.decompress`` stops after the first gzip member: whenever its output is not
    exactly the trailer's size (several members, over 4 GiB, corrupt or cut short), the
    standard library does the whole job, and raises its usual errors.
    """
    size = int.from_bytes(data[-4:], "little") if len(data) >= 18 else 0
    if size:
        try:
            out = zlib.decompress(data, 31, size)
        except zlib.error:
            out = b""
        if len(out) == size:
            return out
    return gzip.decompress(data)


def _all_gzip_members(path: Path, data: bytes) -> bytes | None:
    """The whole gzip stream when it has members past the one ``data`` holds, else None."""
    try:
        raw = path.read_bytes()
        full = gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else data
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error):
        return None
    return full if len(full) != len(data) else None


def _orjson(data: bytes) -> tuple[Any, str | None]:
    try:
        return orjson.loads(data), None
    except orjson.JSONDecodeError as exc:
        return None, str(exc)


def _decode_kineto(path: Path, data: bytes, retry: bool = True) -> KinetoTrace:
    try:
        return KinetoTrace(path, DECODER.decode(data))
    except msgspec.ValidationError as exc:
        if "traceEvents" in str(exc) and "missing required field" in str(exc):
            raise TraceFormatError(f"{path}: JSON, but not a torch.profiler/Kineto trace "
                                   "(it has no traceEvents list)") from None
        raise TraceFormatError(f"{path}: malformed trace event ({exc})") from None
    except msgspec.DecodeError as exc:
        full = _all_gzip_members(path, data) if retry else None
        if full is None:
            raise TraceFormatError(f"{path}: not valid JSON ({exc}); is it a torch.profiler "
                                   "trace, and complete?") from None
    # gunzip's fast path read only the first of several gzip members
    return _decode_kineto(path, full, retry=False)


def load(path: Path) -> KinetoTrace | MemoryTimelineRaw:
    """Parse ``path``.

    Raises:
        TraceFormatError: unreadable, truncated, not JSON, or JSON that is not a trace.
    """
    return parse(path, read_bytes(path))


def parse(path: Path, data: bytes) -> KinetoTrace | MemoryTimelineRaw:
    """:func:`load` on the (decompressed) contents of ``path`` already read."""
    head = data[:4096].lstrip()
    if not head:
        raise TraceFormatError(f"{path}: the file is empty; it is not a trace")
    if head[:1] == b"{":
        return _decode_kineto(path, data)
    doc, error = _orjson(data)
    if error is not None:
        full = _all_gzip_members(path, data)  # gunzip's fast path read only its first member
        if full is not None:
            doc, error = _orjson(full)
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
