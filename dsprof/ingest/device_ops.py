"""Device activity -> the ``kernels`` table; ``[memory]`` instants -> the ``memory`` table.

A kernel is tied to its launch through the CUDA/HIP correlation id that both the runtime call
(``cudaLaunchKernel``, ``hipExtModuleLaunchKernel``, ``cuLaunchKernel``...) and the kernel carry;
the op that issued it is the runtime call's parent span. Its step is the launch's step (HTA's
convention: a kernel belongs to the step whose CPU side launched it), falling back to the
kernel's own start time when the trace has no launch events.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from dsprof.ingest.events import DeviceEvents, MemoryEvents, dur_ns, thread_id, to_ns
from dsprof.ingest.host_ops import HostOps, assign_steps
from dsprof.ingest.trace_schema import raw_text

# HTA's COMMUNICATION pattern (hta/common/types.py), plus RCCL/oneCCL names.
_COMM = re.compile(r"(^nccl)|(ncclKernel)|(ncclDevKernel)|(^rccl)|(^hccl)|(^ccl)|(^gloo)",
                   re.IGNORECASE)
_LAUNCH_CATS = {"cuda_runtime", "cuda_driver", "xpu_runtime", "privateuse1_runtime"}
# c10::DeviceType values as the profiler writes them in "Device Type"
_DEVICE_TYPES = {0: "cpu", 1: "cuda", 9: "xla", 12: "xpu", 13: "mps", 20: "privateuseone"}


def kernel_kind(kind: str, name: str) -> str:
    if kind != "kernel":
        return kind
    return "communication" if _COMM.search(name) else "compute"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else (int(value) if isinstance(value, float) else None)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def build_kernels(dev: DeviceEvents, ops: HostOps, *, base_ns: int, rank: int) -> dict[str, Any]:
    n = len(dev.name)
    start = to_ns(dev.ts, base_ns) if n else np.zeros(0, np.int64)
    dur = dur_ns(dev.dur) if n else np.zeros(0, np.int64)
    launches = ops.ids_by_correlation(_LAUNCH_CATS)
    kind_cache: dict[tuple[str, str], str] = {}
    cols: dict[str, list[Any]] = {k: [] for k in (
        "device", "stream", "kind", "correlation", "launch_id", "op_id", "grid", "block",
        "registers", "shared_mem", "blocks_per_sm", "occupancy", "bytes")}
    launch_start = np.zeros(n, np.int64)
    linked = np.zeros(n, bool)
    for i in range(n):
        a = dev.args[i]
        key = (dev.kind[i], dev.name[i])
        k = kind_cache.get(key)
        if k is None:
            k = kind_cache[key] = kernel_kind(*key)
        cols["kind"].append(k)
        device = _int(a.device)
        cols["device"].append(device if device is not None else _int(dev.pid[i]))
        stream = _int(a.stream)
        cols["stream"].append(stream if stream is not None else thread_id(dev.tid[i]))
        corr = _int(a.correlation)
        cols["correlation"].append(corr)
        hit = launches.get(corr) if corr is not None else None
        if hit is not None:
            cols["launch_id"].append(hit[0])
            cols["op_id"].append(hit[1] if hit[1] >= 0 else None)
            launch_start[i] = hit[2]
            linked[i] = True
        else:
            cols["launch_id"].append(None)
            cols["op_id"].append(None)
        cols["grid"].append(raw_text(a.grid))
        cols["block"].append(raw_text(a.block))
        cols["registers"].append(_int(a.registers))
        cols["shared_mem"].append(_int(a.shared_memory))
        cols["blocks_per_sm"].append(_num(a.blocks_per_sm))
        cols["occupancy"].append(_num(a.occupancy))
        cols["bytes"].append(_int(a.nbytes))
    when = np.where(linked, launch_start, start)
    return {
        "rank": np.full(n, rank, np.int32),
        "step": assign_steps(when, ops.step_spans),
        "name": list(dev.name),
        "start_ns": start,
        "dur_ns": dur,
        **cols,
    }


def build_memory(mem: MemoryEvents, ops: HostOps, *, base_ns: int, rank: int) -> dict[str, Any]:
    n = len(mem.ts)
    ts = to_ns(mem.ts, base_ns) if n else np.zeros(0, np.int64)
    op_ids = _innermost_ops(ts, [thread_id(t) for t in mem.tid], ops)
    device, action, addr, nbytes, allocated, reserved = [], [], [], [], [], []
    device_names: dict[tuple[Any, Any], str] = {}
    for a in mem.args:
        key = (a.device_type, a.device_id)
        dname = device_names.get(key)
        if dname is None:
            dtype, did = _int(a.device_type), _int(a.device_id)
            kind = _DEVICE_TYPES.get(dtype if dtype is not None else 0, f"device{dtype}")
            dname = device_names[key] = (kind if kind == "cpu" or did is None or did < 0
                                         else f"{kind}:{did}")
        device.append(dname)
        b = _int(a.mem_bytes) or 0
        nbytes.append(b)
        action.append("alloc" if b >= 0 else "free")
        addr.append(_int(a.addr))
        allocated.append(_int(a.total_allocated))
        reserved.append(_int(a.total_reserved))
    return {
        "rank": np.full(n, rank, np.int32),
        "device": device,
        "ts_ns": ts,
        "action": action,
        "addr": addr,
        "bytes": nbytes,
        "allocated": allocated,
        "reserved": reserved,
        "category": [None] * n,
        "op_id": op_ids,
        "step": assign_steps(ts, ops.step_spans),
    }


def _innermost_ops(ts: np.ndarray, threads: list[int], ops: HostOps) -> list[int | None]:
    """For each instant, the innermost op on its thread whose span contains it."""
    if len(ts) == 0 or ops.n == 0:
        return [None] * len(ts)
    c = ops.columns
    op_thread = np.asarray(c["thread"])
    op_start = np.asarray(c["start_ns"])
    op_end = op_start + np.asarray(c["dur_ns"])
    op_ids = np.asarray(c["id"])
    parent = c["parent_id"]
    first_id = int(op_ids[0])
    out: list[int | None] = []
    by_thread: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for t in set(threads):
        rows = np.nonzero(op_thread == t)[0]
        by_thread[t] = (rows, op_start[rows])
    ts_l = ts.tolist()
    for k, t in enumerate(threads):
        entry = by_thread.get(t)
        if entry is None or len(entry[0]) == 0:
            out.append(None)
            continue
        rows, starts = entry
        j = int(np.searchsorted(starts, ts_l[k], side="right")) - 1
        found = None
        if j >= 0:
            row = int(rows[j])
            while True:
                if op_end[row] > ts_l[k] or (op_end[row] == ts_l[k] == op_start[row]):
                    found = int(op_ids[row])
                    break
                p = parent[row]
                if p is None:
                    break
                row = p - first_id
        out.append(found)
    return out
