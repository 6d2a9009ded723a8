"""CUDA memory snapshots (``torch.cuda.memory._snapshot()`` pickles) -> memory rows and stacks.

A snapshot is ``{"segments": [...], "device_traces": [[entry, ...] per device]}``: the
allocator's state when it was taken (segments from cudaMalloc, split into blocks, each with the
stack that allocated it) and the ring of recorded actions (``alloc``, ``free_requested``,
``free_completed``, ``segment_alloc``, ``segment_free``, ``oom``, ``snapshot``). The format is
documented in ``torch/cuda/memory.py`` (``_snapshot``).

Rows: ``alloc`` adds a block's size to ``allocated``, ``free_completed`` removes it (as
``torch.cuda._memory_viz`` counts; ``free_requested`` only marks the tensor dead while a stream
still uses it, and is not kept); segment rows move ``reserved``. The totals are rebuilt backwards
from the final state, so they are exact even when the ring dropped older entries. Blocks alive
before the first recorded entry are rows with a null time. Pickles are read with an unpickler
that builds only plain data (dicts, lists, strings, numbers): a pickle naming any class is
refused, so opening a snapshot never runs code; memory, CPU time, object count and depth are
bounded (:mod:`dsprof.ingest.bounded_pickle`), and a snapshot whose fields have the wrong
types is refused with one line (:func:`snapshot_rows`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from dsprof.errors import TraceFormatError
from dsprof.ingest import memory_tables
from dsprof.ingest.bounded_pickle import NamedClass, SnapshotTooLarge, load_plain
from dsprof.ingest.memory_window import COLUMNS
from dsprof.ingest.trace_file import read_bytes


def load_snapshot(path: Path, data: bytes | None = None) -> dict[str, Any]:
    """Read and check a snapshot pickle.

    Raises:
        TraceFormatError: not a pickle, truncated, or a pickle that is not a CUDA snapshot.
    """
    if data is None:
        data = read_bytes(path)
    if not data:
        raise TraceFormatError(f"{path}: the file is empty; it is not a CUDA memory snapshot")
    try:
        doc = load_plain(data)
    except SnapshotTooLarge as exc:
        raise TraceFormatError(f"{path}: refused as a CUDA memory snapshot: {exc} "
                               "(limits in docs/security.md)") from None
    except NamedClass as exc:
        raise TraceFormatError(
            f"{path}: a pickle, but not a CUDA memory snapshot (it stores a {exc} object; "
            "save one with torch.cuda.memory._dump_snapshot())") from None
    except (EOFError, pickle.UnpicklingError, ValueError, IndexError, TypeError, KeyError,
            AttributeError, OverflowError, MemoryError, RecursionError) as exc:
        raise TraceFormatError(f"{path}: truncated or corrupt pickle ({type(exc).__name__}: "
                               f"{exc}); copy the snapshot again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("segments"), list) or \
            not isinstance(doc.get("device_traces", []), list):
        raise TraceFormatError(
            f"{path}: a pickle, but not a CUDA memory snapshot (expected a dict with "
            "'segments' and 'device_traces', as torch.cuda.memory._snapshot() returns)")
    for seg in doc["segments"]:
        if not isinstance(seg, dict) or not {"address", "total_size", "blocks"} <= set(seg):
            raise TraceFormatError(f"{path}: a CUDA memory snapshot with a malformed segment "
                                   "(address, total_size and blocks are required)")
    return doc


def snapshot_rows(path: Path, data: bytes | None, rank: int, stack_base: int) -> SnapshotRows:
    """Read ``path`` and build its rows; a snapshot with fields of the wrong type or shape
    (a string where a size belongs, a block without an address) is one
    :class:`TraceFormatError` naming the file, never a traceback.

    Raises:
        TraceFormatError: not a snapshot, over a limit, or malformed.
    """
    doc = load_snapshot(path, data)
    try:
        return SnapshotRows(doc, rank, stack_base)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RecursionError) as exc:
        raise TraceFormatError(f"{path}: a CUDA memory snapshot with malformed fields "
                               f"({type(exc).__name__}: {exc})") from None


class SnapshotRows:
    """Memory rows, stacks and allocator rows of one snapshot.

    Args:
        snap: the snapshot.
        rank: the rank.
        stack_base: the first stack id to use.
    """

    def __init__(self, snap: dict[str, Any], rank: int, stack_base: int = 0):
        self.rank = rank
        self.mem: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        self.stacks: dict[str, list[Any]] = {"rank": [], "stack_id": [], "site": [], "frames": []}
        self.allocator: dict[str, list[Any]] = {k: [] for k in memory_tables.ALLOCATOR_COLUMNS}
        self._stack_ids: dict[tuple[tuple[Any, ...], ...], int] = {}
        self._next = stack_base
        segments: dict[int, list[dict[str, Any]]] = {}
        for seg in snap["segments"]:
            segments.setdefault(int(seg.get("device", 0)), []).append(seg)
        traces = snap.get("device_traces") or []
        for dev in sorted(set(segments) | {i for i, t in enumerate(traces) if t}):
            self._device(dev, segments.get(dev, []), traces[dev] if dev < len(traces) else [])

    @property
    def next_stack_id(self) -> int:
        return self._next

    def _stack(self, frames: Any) -> int | None:
        if not frames:
            return None
        key = tuple((f.get("filename", "?"), int(f.get("line", 0)), f.get("name", "?"))
                    for f in frames if isinstance(f, dict))
        if not key:
            return None
        sid = self._stack_ids.get(key)
        if sid is None:
            sid = self._stack_ids[key] = self._next
            self._next += 1
            memory_tables.add_stack(self.stacks, self.rank, sid, [list(f) for f in key])
        return sid

    def _row(self, **values: Any) -> None:
        values.setdefault("rank", self.rank)
        values.setdefault("source", "snapshot")
        for c in COLUMNS:
            self.mem[c].append(values.get(c))

    def _device(self, dev: int, segs: list[dict[str, Any]], trace: list[dict[str, Any]]) -> None:
        name = f"cuda:{dev}"
        final_alloc = sum(int(s.get("allocated_size", _active(s))) for s in segs)
        final_res = sum(int(s["total_size"]) for s in segs)
        net_alloc = net_res = 0
        allocated_in_trace: set[int] = set()
        freed_first: dict[int, dict[str, Any]] = {}
        for e in trace:
            act, size = e.get("action"), int(e.get("size", 0))
            if act == "alloc":
                net_alloc += size
                allocated_in_trace.add(e.get("addr"))
            elif act == "free_completed":
                net_alloc -= size
                if e.get("addr") not in allocated_in_trace:
                    freed_first.setdefault(e.get("addr"), e)
            elif act == "segment_alloc":
                net_res += size
            elif act == "segment_free":
                net_res -= size
        allocated, reserved = final_alloc - net_alloc, final_res - net_res
        # blocks older than the trace: those it saw freed, then those still alive at the end
        for addr, e in freed_first.items():
            self._row(device=name, action="alloc", addr=addr, bytes=int(e.get("size", 0)),
                      allocated=None, reserved=None, stack_id=self._stack(e.get("frames")))
        for s in segs:
            for b in _blocks(s):
                if b["state"] == "active_allocated" and b["address"] not in allocated_in_trace:
                    self._row(device=name, action="alloc", addr=b["address"], bytes=b["size"],
                              stack_id=self._stack(b.get("frames")))
        for e in trace:
            act, size = e.get("action"), int(e.get("size", 0))
            ts = int(e["time_us"]) * 1000 if isinstance(e.get("time_us"), (int, float)) else None
            if act == "alloc":
                allocated += size
                delta = size
            elif act == "free_completed":
                allocated -= size
                delta = -size
                act = "free"
            elif act == "segment_alloc":
                reserved += size
                delta = size
            elif act == "segment_free":
                reserved -= size
                delta = -size
            elif act == "oom":
                delta = size
            else:  # free_requested, snapshot
                continue
            self._row(device=name, ts_ns=ts, action=act, addr=e.get("addr"), bytes=delta,
                      allocated=allocated, reserved=reserved,
                      stack_id=self._stack(e.get("frames")))
        self._segments_row(name, segs, trace)

    def _segments_row(self, name: str, segs: list[dict[str, Any]], trace: list[Any]) -> None:
        free_in_used = largest = 0
        for s in segs:
            blocks = _blocks(s)
            inactive = [b["size"] for b in blocks if b["state"] == "inactive"]
            if inactive:
                largest = max(largest, max(inactive))
            if any(b["state"] != "inactive" for b in blocks):
                free_in_used += sum(inactive)
        last = next((e["time_us"] for e in reversed(trace) if "time_us" in e), None)
        memory_tables._allocator_row(
            self.allocator, self.rank, name, None, int(last) * 1000 if last is not None else None,
            "snapshot", allocated=sum(int(s.get("allocated_size", _active(s))) for s in segs),
            reserved=sum(int(s["total_size"]) for s in segs), inactive_split=free_in_used,
            largest_free=largest)


def _blocks(seg: dict[str, Any]) -> list[dict[str, Any]]:
    """Blocks with addresses (older snapshots omit them: they follow one another)."""
    out = []
    addr = int(seg["address"])
    for b in seg.get("blocks", []):
        size = int(b.get("size", 0))
        out.append({"address": int(b.get("address", addr)), "size": size,
                    "state": b.get("state", "inactive"), "frames": b.get("frames")})
        addr += size
    return out


def _active(seg: dict[str, Any]) -> int:
    return sum(b["size"] for b in _blocks(seg) if b["state"] == "active_allocated")
