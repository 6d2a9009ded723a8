"""Split a Kineto trace's events into columns, in one pass, with nothing computed yet.

Kineto writes several flavours: current (``cpu_op``, ``cuda_runtime``, ``kernel``,
``gpu_memcpy``...), the 2021 legacy one (``Operator``, ``Runtime``, ``Kernel``, ``Memcpy``),
ROCm (``hip*`` runtime names, same categories), integer or float microsecond timestamps, and
string or integer thread ids. This module normalizes categories and keeps the raw ``args``
dict of each event for the builders, so the hot loop stays a dictionary dispatch.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsprof.ingest.trace_schema import Args, Event

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
}
MODULE_PREFIX = "nn.Module: "
DSPROF_MODULE_PREFIX = "dsprof.module: "


@dataclass
class HostEvents:
    cat: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    tid: list[Any] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    dur: list[float] = field(default_factory=list)
    args: list[Args] = field(default_factory=list)


@dataclass
class DeviceEvents:
    kind: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    pid: list[Any] = field(default_factory=list)
    tid: list[Any] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    dur: list[float] = field(default_factory=list)
    args: list[Args] = field(default_factory=list)


@dataclass
class MemoryEvents:
    tid: list[Any] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    args: list[Args] = field(default_factory=list)


@dataclass
class SplitTrace:
    host: HostEvents
    device: DeviceEvents
    memory: MemoryEvents
    skipped: Counter[str]
    n_events: int


def split(events: list[Event]) -> SplitTrace:
    host, device, memory = HostEvents(), DeviceEvents(), MemoryEvents()
    skipped: Counter[str] = Counter()
    lower: dict[Any, str] = {}
    h_cat, h_name, h_tid, h_ts, h_dur, h_args = (host.cat, host.name, host.tid, host.ts,
                                                 host.dur, host.args)
    for e in events:
        ph = e.ph
        if ph == "X":
            cat = e.cat
            lc = lower.get(cat)
            if lc is None:
                lc = lower[cat] = str(cat).lower()
            hc = HOST_CATS.get(lc)
            if hc is not None:
                h_cat.append(hc)
                h_name.append(e.name)
                h_tid.append(e.tid)
                h_ts.append(e.ts)
                h_dur.append(e.dur)
                h_args.append(e.args)
                continue
            dk = DEVICE_CATS.get(lc)
            if dk is not None:
                device.kind.append(dk)
                device.name.append(e.name)
                device.pid.append(e.pid)
                device.tid.append(e.tid)
                device.ts.append(e.ts)
                device.dur.append(e.dur)
                device.args.append(e.args)
                continue
            skipped[lc] += 1
        elif ph == "i" or ph == "I":
            if e.name == "[memory]":
                memory.tid.append(e.tid)
                memory.ts.append(e.ts)
                memory.args.append(e.args)
            else:
                skipped["instant:" + str(e.name)] += 1
        elif ph != "M":
            skipped[f"ph:{ph}"] += 1
    return SplitTrace(host, device, memory, skipped, len(events))


def to_ns(values: list[float], base_ns: int = 0) -> np.ndarray:
    """Kineto microseconds (int or float) -> int64 nanoseconds, without float64 rounding loss.

    Epoch microseconds times 1000 exceed 2**53, so the integer and fractional parts are
    converted separately.
    """
    arr = np.asarray(values, dtype=np.float64)
    whole = np.floor(arr)
    frac_ns = np.rint((arr - whole) * 1000.0).astype(np.int64)
    return whole.astype(np.int64) * 1000 + frac_ns + np.int64(base_ns)


def dur_ns(values: list[float]) -> np.ndarray:
    return np.maximum(np.rint(np.asarray(values, dtype=np.float64) * 1000.0), 0).astype(np.int64)


_tid_cache: dict[Any, int] = {}


def thread_id(tid: Any) -> int:
    """Integer thread id; numeric strings are parsed, other strings hashed (stable)."""
    cached = _tid_cache.get(tid)
    if cached is not None:
        return cached
    if isinstance(tid, int):
        value = tid
    elif isinstance(tid, str) and tid.lstrip("-").isdigit():
        value = int(tid)
    elif isinstance(tid, float):
        value = int(tid)
    else:
        value = zlib.crc32(str(tid).encode())
    _tid_cache[tid] = value
    return value
