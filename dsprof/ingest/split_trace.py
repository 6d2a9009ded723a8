"""What splitting a trace yields (:mod:`dsprof.ingest.events`): its events as compact columns,
by where they go (host ops, device activity, memory events), before any table is built."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dsprof.ingest.trace_schema import NO_ARGS, Args


@dataclass
class ArgsColumns:
    """The ``args`` fields the builders read, one column per field, rows aligned with the
    events they belong to.

    Arrow arrays hold numbers as the builders convert them (``int_column`` /
    ``float_column``, nulls for anything else) and JSON text (``raw_strings``); lists hold
    values the builders still interpret one by one. ``objects`` maps a row to its whole
    ``Args`` (``msgspec.Raw`` fields copied) for the rows that need one: ops with a FLOPs
    formula, and events that name a collective.
    """

    arrow: dict[str, pa.Array] = field(default_factory=dict)
    lists: dict[str, list[Any]] = field(default_factory=dict)
    objects: dict[int, Args] = field(default_factory=dict)

    def at(self, row: int) -> Args:
        """The args of ``row`` if it is one of :attr:`objects`, else empty args."""
        return self.objects.get(row, NO_ARGS)


@dataclass
class HostEvents:
    cat: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    thread: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dur: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # arrow: correlation (else External id), seq, input_shapes, dtypes
    args: ArgsColumns = field(default_factory=ArgsColumns)
    # python_function events: row -> (Python id, Python parent id)
    python: dict[int, tuple[Any, Any]] = field(default_factory=dict)


@dataclass
class DeviceEvents:
    kind: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    pid: pa.Array = field(default_factory=lambda: pa.array([], pa.int64()))
    thread: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dur: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # arrow: correlation, device, stream, grid, block, registers, shared_memory,
    # blocks_per_sm, occupancy, nbytes
    args: ArgsColumns = field(default_factory=ArgsColumns)


@dataclass
class MemoryEvents:
    thread: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # arrow: mem_bytes, addr, total_allocated, total_reserved; lists: device_type, device_id
    args: ArgsColumns = field(default_factory=ArgsColumns)


@dataclass
class SplitTrace:
    host: HostEvents
    device: DeviceEvents
    memory: MemoryEvents
    skipped: Counter[str]
    n_events: int
    # ``Ev Idx`` of every event that has an integer one (see pipeline._events_kept): int64,
    # or object where some value is past int64 (not a Python int per event: those would stay
    # scattered among the chunks' freed structs)
    ev_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
