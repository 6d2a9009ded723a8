"""Split a Kineto trace's events into compact columns, a chunk of events at a time.

Kineto writes several flavours: current (``cpu_op``, ``cuda_runtime``, ``kernel``,
``gpu_memcpy``...), the 2021 legacy one (``Operator``, ``Runtime``, ``Kernel``, ``Memcpy``),
ROCm (``hip*`` runtime names, same categories), integer or float microsecond timestamps, and
string or integer thread ids. This module normalizes categories and turns each event's fields
and the ``args`` the builders read into columns, with nothing computed yet.

Memory is the reason for the chunks. The trace arrives as raw JSON slices of one buffer
(:func:`split_raw`); a chunk of them is decoded into msgspec structs, its columns are built
(numpy float arrays for times, Arrow arrays for numbers and JSON text, lists of shared strings
for names), and the structs are dropped before the next chunk is decoded. So the decoded trace
never exists whole (its structs take 1.5-2.6x the JSON's size), and no ``msgspec.Raw`` field
outlives its chunk (each one would pin the whole decompressed buffer). What the builders need
as objects -- the args of ops that FLOPs are computed for, and of collectives -- is kept for
those few events only (:attr:`ArgsColumns.objects`), with their raw fields copied.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from itertools import repeat
from operator import is_not, itemgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
from msgspec import Raw

from dsprof.ingest.chunk_spans import ChunkSpans
from dsprof.ingest.columns import (  # noqa: F401 - ingest modules import them from here
    dur_ns,
    float_column,
    int_column,
    int_values,
    raw_strings,
    strings_object_array,
    thread_id,
    thread_ids,
    to_ns,
)
from dsprof.ingest.flops import FORMULAS
from dsprof.ingest.split_trace import (
    ArgsColumns,
    DeviceEvents,
    HostEvents,
    MemoryEvents,
    SplitTrace,
)
from dsprof.ingest.trace_schema import EVENTS_DECODER, Args, Event
from dsprof.vocabulary import (  # noqa: F401 - ingest modules import them from here
    CLOSURE_SPAN,
    DSPROF_MODULE_PREFIX,
)

# Kineto category (lower case) -> ops.cat
HOST_CATS = {
    "cpu_op": "cpu_op",
    "operator": "cpu_op",
    "user_annotation": "user_annotation",
    "cuda_runtime": "cuda_runtime",
    "runtime": "cuda_runtime",
    "cuda_driver": "cuda_driver",
    "xpu_runtime": "xpu_runtime",
    "privateuse1_runtime": "privateuse1_runtime",
    "python_function": "python_function",
}
# Kineto category (lower case) -> kernels.kind before name-based refinement
DEVICE_CATS = {
    "kernel": "kernel",
    "gpu_memcpy": "memcpy",
    "memcpy": "memcpy",
    "gpu_memset": "memset",
    "memset": "memset",
    # stream/event/context synchronization, drawn on the GPU lanes (HTA counts it as busy time)
    "cuda_sync": "sync",
}
MODULE_PREFIX = "nn.Module: "

# events decoded at a time: ~2.5 MB of structs, small next to the trace's own buffer (8,192: +6 MB
# of peak on kineto_resnet50_v100_mem; 2,048: a few % more CPU)
CHUNK_EVENTS = 4096
_HOST, _DEVICE, _SKIP, _INSTANT, _META = range(5)


def split(events: list[Event]) -> SplitTrace:
    """Columns of decoded events (one chunk: the whole list)."""
    acc = _Accumulator()
    acc.add(events)
    return acc.finish()


def split_raw(raws: list[Raw], buffer: bytes | None = None,
              chunk: int = CHUNK_EVENTS) -> SplitTrace:
    """Columns of raw JSON events, decoded ``chunk`` events at a time (module docstring).

    Args:
        raws: the events' JSON.
        buffer: the JSON document they were decoded from, if they are slices of it: a chunk
            is then one copy of its span (events and the commas between them), not a join.
        chunk: events per chunk.
    """
    return split_owned([raws, buffer], chunk)


def split_owned(owned: list[Any], chunk: int = CHUNK_EVENTS) -> SplitTrace:
    """:func:`split_raw` of ``owned = [raws, buffer]``, which it empties: when the caller
    holds no other reference to them, the ``Raw`` objects are freed before the first chunk is
    decoded (only where each chunk lies in the buffer is kept) and the buffer after the last,
    before the columns are joined. Ingest's peak memory is the buffer + the columns so far, not
    the buffer + one object per event + the columns."""
    raws, buffer = owned
    owned.clear()
    acc = _Accumulator()
    spans = ChunkSpans(buffer) if buffer is not None else None
    bounds = spans.bounds(raws, chunk) if spans is not None else None
    buffer = None
    if bounds is not None:
        n_events = len(raws)
        raws = None
    for i, lo in enumerate(range(0, n_events if bounds is not None else len(raws), chunk)):
        if bounds is not None:
            text = spans.span(*bounds[i])
        else:
            part = raws[lo:lo + chunk]
            text = b"[" + b",".join(part) + b"]"
        try:
            events = EVENTS_DECODER.decode(text)
        except msgspec.ValidationError as exc:
            # where in the whole trace, not in the chunk: `$[i]...` -> `$.traceEvents[lo+i]...`
            raise msgspec.ValidationError(_CHUNK_PATH.sub(
                lambda m, lo=lo: f"`$.traceEvents[{lo + int(m.group(1))}]", str(exc))) from None
        acc.add(events)
        del events, text
    if spans is not None:
        spans.release()
    return acc.finish()


_CHUNK_PATH = re.compile(r"`\$\[(\d+)\]")


class _Accumulator:
    """Columns of the chunks seen so far, each field a list of per-chunk pieces."""

    def __init__(self) -> None:
        self.n_events = 0
        self.n_host = self.n_device = 0
        self.skipped: Counter[str] = Counter()
        self.ev_idx: list[np.ndarray] = []
        self.strings: dict[Any, Any] = {}  # one str object per distinct name
        self.route_code: dict[tuple[str, Any], int] = {}
        self.ph_code: dict[str, int] = {}  # (their codes while routing)
        self.cat_code: dict[Any, int] = {}
        self.routes: list[tuple[int, str]] = []  # route code -> (where, ops.cat / kind / key)
        self.parts: dict[str, list[Any]] = {}
        self.host_objects: dict[int, Args] = {}
        self.device_objects: dict[int, Args] = {}
        self.python: dict[int, tuple[Any, Any]] = {}

    def put(self, key: str, value: Any) -> None:
        self.parts.setdefault(key, []).append(value)

    def add(self, events: list[Event]) -> None:
        n = len(events)
        self.n_events += n
        args = [e.args for e in events]
        ev_idx = [a.ev_idx for a in args]
        # (most traces number no event: one count in C instead of a type test per event)
        idx = [i for i in ev_idx if type(i) is int] if ev_idx.count(None) < n else None
        if idx:
            try:
                self.ev_idx.append(np.array(idx, np.int64))
            except OverflowError:
                self.ev_idx.append(np.array(idx, object))
        code = self._route_codes([e.ph for e in events], [e.cat for e in events])
        where = np.array([r[0] for r in self.routes], np.int8)[code]
        label = np.array([r[1] for r in self.routes], object)
        host = np.flatnonzero(where == _HOST)
        device = np.flatnonzero(where == _DEVICE)
        self.skipped.update(label[code[where == _SKIP]].tolist())
        memory: list[int] = []
        instant = np.flatnonzero(where == _INSTANT).tolist()
        if instant:
            names = [e.name for e in _pick(events, instant)]
            memory = [i for i, name in zip(instant, names) if name == "[memory]"]
            self.skipped.update(["instant:" + str(name) for name in names
                                 if name != "[memory]"])
        if len(host):
            self._host(_pick(events, host), _pick(args, host), label[code[host]].tolist())
        if len(device):
            self._device(_pick(events, device), _pick(args, device),
                         label[code[device]].tolist())
        if memory:
            self._memory(_pick(events, memory), _pick(args, memory))

    def _route_codes(self, phs: list[str], cats: list[Any]) -> np.ndarray:
        """Route code (index into :attr:`routes`) of each event, decided once per distinct
        (phase, category). The phase and the category are coded apart, each a dict lookup in
        C, and paired in numpy: a (phase, category) tuple per event to hash cost 3x as much."""
        n = len(phs)
        ph_code = self._codes(self.ph_code, phs)
        cat_code = self._codes(self.cat_code, cats)
        pair = ph_code * len(self.cat_code) + cat_code
        distinct, inverse = np.unique(pair, return_inverse=True)
        ph_values, cat_values = list(self.ph_code), list(self.cat_code)
        routes = np.empty(len(distinct), np.int32)
        for j, p in enumerate(distinct.tolist()):
            key = (ph_values[p // len(cat_values)], cat_values[p % len(cat_values)])
            if key not in self.route_code:
                self.route_code[key] = len(self.routes)
                self.routes.append(_route(*key))
            routes[j] = self.route_code[key]
        return routes[inverse.reshape(n)]

    @staticmethod
    def _codes(seen: dict[Any, int], values: list[Any]) -> np.ndarray:
        """Code of each value in ``seen`` (first-seen order), new values added to it."""
        codes = list(map(seen.get, values))
        if None in codes:
            for v in dict.fromkeys(values):
                seen.setdefault(v, len(seen))
            codes = list(map(seen.__getitem__, values))
        return np.fromiter(codes, np.int64, len(values))

    def _names(self, evs: list[Event]) -> list[Any]:
        names = [e.name for e in evs]
        return list(map(self.strings.setdefault, names, names))

    def _host(self, evs: list[Event], args: list[Args], cats: list[str]) -> None:
        names = self._names(evs)
        self.put("host.cat", cats)
        self.put("host.name", names)
        self.put("host.thread", thread_ids([e.tid for e in evs]))
        self.put("host.ts", np.array([e.ts for e in evs], np.float64))
        self.put("host.dur", np.array([e.dur for e in evs], np.float64))
        self.put("host.correlation", int_column([
            a.correlation if a.correlation is not None else
            a.external_id if a.external_id is not None else a.external_id_legacy
            for a in args]))
        self.put("host.seq", int_column([a.seq for a in args]))
        self.put("host.input_shapes", raw_strings([a.input_dims or a.input_dims_early
                                                   for a in args]))
        self.put("host.dtypes", raw_strings([a.input_type for a in args]))
        if "python_function" in set(cats):  # the Python tracer's events: few traces have them
            for i, (cat, a) in enumerate(zip(cats, args)):
                if cat == "python_function":
                    self.python[self.n_host + i] = (a.python_id, a.python_parent_id)
        keep = np.fromiter(map(FORMULAS.__contains__, names), bool, len(names))
        keep |= np.fromiter(map(is_not, [a.collective for a in args], repeat(None)), bool,
                            len(names))
        for i in np.flatnonzero(keep).tolist():
            self.host_objects[self.n_host + i] = _owned(args[i])
        self.n_host += len(evs)

    def _device(self, evs: list[Event], args: list[Args], kinds: list[str]) -> None:
        self.put("device.kind", kinds)
        self.put("device.name", self._names(evs))
        self.put("device.pid", int_column([e.pid for e in evs], floats=True))
        self.put("device.thread", thread_ids([e.tid for e in evs]))
        self.put("device.ts", np.array([e.ts for e in evs], np.float64))
        self.put("device.dur", np.array([e.dur for e in evs], np.float64))
        put = self.put
        put("device.correlation", int_column([a.correlation for a in args], floats=True))
        put("device.device", int_column([a.device for a in args], floats=True))
        put("device.stream", int_column([a.stream for a in args], floats=True))
        put("device.registers", int_column([a.registers for a in args], floats=True))
        put("device.shared_memory", int_column([a.shared_memory for a in args], floats=True))
        put("device.nbytes", int_column([a.nbytes for a in args], floats=True))
        put("device.blocks_per_sm", float_column([a.blocks_per_sm for a in args]))
        put("device.occupancy", float_column([a.occupancy for a in args]))
        self.put("device.grid", raw_strings([a.grid for a in args]))
        self.put("device.block", raw_strings([a.block for a in args]))
        talks = np.fromiter(map(is_not, [a.collective for a in args], repeat(None)), bool,
                            len(args))
        for i in np.flatnonzero(talks).tolist():
            self.device_objects[self.n_device + i] = _owned(args[i])
        self.n_device += len(evs)

    def _memory(self, evs: list[Event], args: list[Args]) -> None:
        self.put("memory.thread", thread_ids([e.tid for e in evs]))
        self.put("memory.ts", np.array([e.ts for e in evs], np.float64))
        put = self.put
        put("memory.mem_bytes", int_column([a.mem_bytes for a in args], floats=True))
        put("memory.addr", int_column([a.addr for a in args], floats=True))
        put("memory.total_allocated", int_column([a.total_allocated for a in args], floats=True))
        put("memory.total_reserved", int_column([a.total_reserved for a in args], floats=True))
        self.put("memory.device_type", [a.device_type for a in args])
        self.put("memory.device_id", [a.device_id for a in args])

    def _take(self, key: str, empty: Callable[[], Any]) -> Any:
        pieces = self.parts.pop(key, None)
        if not pieces:
            return empty()
        if isinstance(pieces[0], np.ndarray):
            return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        if isinstance(pieces[0], pa.Array):
            return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)
        return [v for piece in pieces for v in piece]

    def _args(self, prefix: str, arrow: dict[str, pa.DataType], lists: tuple[str, ...],
              objects: dict[int, Args]) -> ArgsColumns:
        return ArgsColumns(
            {k: self._take(f"{prefix}.{k}", lambda t=t: pa.array([], t)) for k, t in arrow.items()},
            {k: self._take(f"{prefix}.{k}", list) for k in lists}, objects)

    def finish(self) -> SplitTrace:
        take = self._take
        i64, f64, text = pa.int64(), pa.float64(), pa.large_string()
        host = HostEvents(
            take("host.cat", list), take("host.name", list),
            take("host.thread", lambda: np.zeros(0, np.int64)),
            take("host.ts", lambda: np.zeros(0)), take("host.dur", lambda: np.zeros(0)),
            self._args("host", {"correlation": i64, "seq": i64, "input_shapes": text,
                                "dtypes": text}, (), self.host_objects),
            self.python)
        device = DeviceEvents(
            take("device.kind", list), take("device.name", list),
            take("device.pid", lambda: pa.array([], i64)),
            take("device.thread", lambda: np.zeros(0, np.int64)),
            take("device.ts", lambda: np.zeros(0)), take("device.dur", lambda: np.zeros(0)),
            self._args("device", {"correlation": i64, "device": i64, "stream": i64,
                                  "registers": i64, "shared_memory": i64, "nbytes": i64,
                                  "blocks_per_sm": f64, "occupancy": f64, "grid": text,
                                  "block": text}, (), self.device_objects))
        memory = MemoryEvents(
            take("memory.thread", lambda: np.zeros(0, np.int64)),
            take("memory.ts", lambda: np.zeros(0)),
            self._args("memory", {"mem_bytes": i64, "addr": i64, "total_allocated": i64,
                                  "total_reserved": i64}, ("device_type", "device_id"), {}))
        return SplitTrace(host, device, memory, self.skipped, self.n_events,
                          np.concatenate(self.ev_idx) if self.ev_idx else np.zeros(0, np.int64))


def _pick(items: list[Any], rows: Any) -> list[Any]:
    """``[items[i] for i in rows]``, indexed in C."""
    rows = rows.tolist() if isinstance(rows, np.ndarray) else rows
    if len(rows) == 1:
        return [items[rows[0]]]
    return list(itemgetter(*rows)(items)) if rows else []


def _route(ph: str, cat: Any) -> tuple[int, str]:
    """Where events of phase ``ph`` and category ``cat`` go, and their ops.cat / kernel kind
    (or, for skipped ones, the key they are counted under)."""
    if ph == "X":
        lc = str(cat).lower()
        hc = HOST_CATS.get(lc)
        if hc is not None:
            return _HOST, hc
        dk = DEVICE_CATS.get(lc)
        if dk is not None:
            return _DEVICE, dk
        return _SKIP, lc
    if ph == "i" or ph == "I":
        return _INSTANT, ""
    if ph == "M":
        return _META, ""  # metadata: neither kept nor counted
    return _SKIP, f"ph:{ph}"


def _owned(args: Args) -> Args:
    """``args`` with its raw JSON fields copied out of the buffer they were decoded from (a
    ``Raw`` field keeps that whole buffer alive, and a chunk's buffer is reused)."""
    return msgspec.structs.replace(
        args, input_dims=args.input_dims.copy(), input_dims_early=args.input_dims_early.copy(),
        input_type=args.input_type.copy(), concrete=args.concrete.copy(),
        grid=args.grid.copy(), block=args.block.copy())
