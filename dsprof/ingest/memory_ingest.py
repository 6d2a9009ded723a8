"""Everything memory for one rank's ingest: the window traces' memory rows joined with the
memory collector's census, CUDA snapshots, the allocator's per-step counters, and the tables
derived from them (``memory_series``, ``modules``, ``stacks``, ``allocator``,
``grad_holders``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from dsprof.errors import TraceFormatError
from dsprof.ingest import memory_tables
from dsprof.ingest.cuda_snapshot import snapshot_rows
from dsprof.ingest.memory_window import COLUMNS, attribute
from dsprof.ingest.steps import step_column

CENSUS_SUFFIX = ".census"
SNAPSHOT_SUFFIX = ".pickle"
ALLOCATOR_FILE = "allocator.jsonl"
MEMORY_TABLES = ("memory", "memory_series", "modules", "stacks", "allocator", "grad_holders")


class MemoryParts:
    """Collects the memory tables' parts of one rank.

    Args:
        raw: ``raw/rank<R>/``.
        rank: the rank.
    """

    def __init__(self, raw: Path, rank: int):
        self.raw = raw
        self.rank = rank
        self.parts: dict[str, list[dict[str, Any]]] = {t: [] for t in MEMORY_TABLES}
        self.events = 0
        self._stack_base = 0
        self._capture = 0
        self._used_snapshots: set[str] = set()

    def add_trace(self, trace: Path, mem: dict[str, Any], ops: dict[str, Any],
                  step_spans: list[tuple[int, int, int]]) -> None:
        """A Kineto trace's memory columns; joined with its census when dsprof wrote one."""
        census = self._census(trace)
        if census is not None and census.get("snapshot"):
            mem = self._with_snapshot(mem, census["snapshot"], step_spans)
        # (only for a trace with memory events: the dict of every op costs ~3 ms per 40k ops)
        op_module = {i: m for i, m in zip(_list(ops["id"]), _list(ops["module"])) if m} \
            if len(mem["ts_ns"]) else {}
        cols = attribute(mem, op_module, census, self.rank, self._stack_base, self._capture)
        self._add_rows(cols)
        if census is not None:
            self.parts["stacks"].append(memory_tables.stacks(census, self.rank, self._stack_base))
            self._stack_base += len(census.get("sites", []))
            self.parts["modules"].append(memory_tables.modules(census, ops, self.rank))
            self.parts["allocator"].append(
                memory_tables.timeline_allocator(cols, census, self.rank))
            self.parts["grad_holders"].append(memory_tables.holders(census, self.rank))

    def add_snapshot(self, path: Path, data: bytes | None = None) -> None:
        """A snapshot pickle on its own (an out-of-memory dump, or an imported one)."""
        if path.name in self._used_snapshots:
            return
        snap = snapshot_rows(path, data, self.rank, self._stack_base)
        self._stack_base = snap.next_stack_id
        self.events += len(snap.mem["ts_ns"])
        self._add_rows(attribute(snap.mem, {}, None, self.rank, capture=self._capture))
        self.parts["stacks"].append(snap.stacks)
        self.parts["allocator"].append(snap.allocator)

    def add_rows(self, cols: dict[str, Any]) -> None:
        """Rows already in memory-table form (raw memory timelines)."""
        cols["capture"] = [self._capture] * len(cols["ts_ns"])
        self._add_rows(cols)

    def finish(self) -> None:
        """Remaining raw files: snapshots not tied to a window, the allocator's counters."""
        for path in sorted(self.raw.glob(f"*{SNAPSHOT_SUFFIX}")):
            self.add_snapshot(path)
        if len(self.parts["modules"]) > 1:
            self.parts["modules"] = [memory_tables.merge_modules(self.parts["modules"])]
        stats = self.raw / ALLOCATOR_FILE
        if stats.is_file():
            lines = [orjson.loads(line) for line in stats.read_bytes().splitlines() if line]
            self.parts["allocator"].append(memory_tables.allocator_stats(lines, self.rank))

    # -- internals ------------------------------------------------------------------------
    def _add_rows(self, cols: dict[str, Any]) -> None:
        self.parts["memory"].append(cols)
        self.parts["memory_series"].append(memory_tables.series(cols, self.rank))
        self._capture += 1

    def _census(self, trace: Path) -> dict[str, Any] | None:
        name = trace.name.removesuffix(".trace.json")
        path = self.raw / f"{name}{CENSUS_SUFFIX}"
        if name == trace.name or not path.is_file():
            return None
        try:
            return orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise TraceFormatError(f"{path}: corrupt memory census ({exc})") from None

    def _with_snapshot(self, mem: dict[str, Any], name: str,
                       step_spans: list[tuple[int, int, int]]) -> dict[str, Any]:
        """The window's CUDA rows from its snapshot (with stacks) instead of the profiler's."""
        path = self.raw / name
        if not path.is_file():
            return mem
        self._used_snapshots.add(name)
        snap = snapshot_rows(path, None, self.rank, self._stack_base)
        self._stack_base = snap.next_stack_id
        self.parts["stacks"].append(snap.stacks)
        self.parts["allocator"].append(snap.allocator)
        keep = [i for i, d in enumerate(_list(mem["device"])) if not d.startswith("cuda")]
        out = {c: [_list(mem[c])[i] for i in keep] if c in mem else [None] * len(keep)
               for c in COLUMNS}
        out["source"] = ["profiler"] * len(keep)
        ts = snap.mem["ts_ns"]
        steps = step_column([t or 0 for t in ts], step_spans).to_pylist() if ts else []
        snap.mem["step"] = [s if t is not None else None for s, t in zip(steps, ts)]
        for c in COLUMNS:
            out[c] = out[c] + snap.mem[c]
        return out


def _list(values: Any) -> list[Any]:
    return memory_tables._list(values)

