"""Device activity -> the ``kernels`` table; ``[memory]`` instants -> the ``memory`` table.

A kernel is tied to its launch through the CUDA/HIP correlation id that both the runtime call
(``cudaLaunchKernel``, ``hipExtModuleLaunchKernel``, ``cuLaunchKernel``...) and the kernel carry;
the op that issued it is the runtime call's parent span. Its step is the launch's step (HTA's
convention: a kernel belongs to the step whose CPU side launched it), falling back to the
kernel's own start time when the trace has no launch events.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsprof.ingest.columns import text_array
from dsprof.ingest.events import dur_ns, int_values, to_ns
from dsprof.ingest.host_ops import HostOps
from dsprof.ingest.kernel_class import classify_names
from dsprof.ingest.split_trace import DeviceEvents, MemoryEvents
from dsprof.ingest.steps import step_column

# HTA's COMMUNICATION pattern (hta/common/types.py), plus RCCL/oneCCL names.
_COMM = re.compile(r"(^nccl)|(ncclKernel)|(ncclDevKernel)|(^rccl)|(^hccl)|(^ccl)|(^gloo)",
                   re.IGNORECASE)
_LAUNCH_CATS = {"cuda_runtime", "cuda_driver", "xpu_runtime", "privateuse1_runtime"}
# c10::DeviceType values as the profiler writes them in "Device Type"
_DEVICE_TYPES = {0: "cpu", 1: "cuda", 9: "xla", 12: "xpu", 13: "mps", 20: "privateuseone"}
_ACTIONS = np.array(["free", "alloc"], dtype=object)  # memory.action by (bytes >= 0)


def kernel_kind(kind: str, name: str) -> str:
    if kind != "kernel":
        return kind
    # Every alternative of _COMM contains "ccl" or is "gloo": a cheap test first, since the
    # regex is slow on long templated kernel names.
    low = name.lower()
    if "ccl" not in low and not low.startswith("gloo"):
        return "compute"
    return "communication" if _COMM.search(name) else "compute"


def _int(value: Any) -> int | None:
    """An int from a trace value (floats truncated); None for anything else, a non-finite float
    included."""
    if type(value) is float:
        return int(value) if math.isfinite(value) else None
    return value if type(value) is int else None


def build_kernels(dev: DeviceEvents, ops: HostOps, *, base_ns: int, rank: int) -> dict[str, Any]:
    n = len(dev.name)
    start = to_ns(dev.ts, base_ns) if n else np.zeros(0, np.int64)
    dur = dur_ns(dev.dur) if n else np.zeros(0, np.int64)
    args = dev.args.arrow

    comm = {name: kernel_kind("kernel", name)
            for name in {name for k, name in zip(dev.kind, dev.name) if k == "kernel"}}
    kind = [comm[name] if k == "kernel" else k for k, name in zip(dev.kind, dev.name)]
    category, tensor_core = classify_names(dev.name, kind)
    correlation = args["correlation"]
    corr, corr_ok = int_values(correlation)
    launch = ops.launch_rows(_LAUNCH_CATS, corr, corr_ok)
    linked = launch >= 0
    row = np.maximum(launch, 0)
    ids = ops.columns["id"]
    parent = ops.parent_row[row] if ops.n else np.full(n, -1, np.int64)
    has_op = linked & (parent >= 0)
    when = np.where(linked, ops.columns["start_ns"][row], start) if ops.n else start
    return {
        "rank": np.full(n, rank, np.int32),
        "step": step_column(when, ops.step_spans),
        "name": text_array(dev.name),
        "start_ns": start,
        "dur_ns": dur,
        "device": pc.coalesce(args["device"], dev.pid),
        "stream": pc.coalesce(args["stream"], pa.array(dev.thread)),
        "kind": kind,
        "category": category,
        "tensor_core": tensor_core,
        "correlation": correlation,
        "launch_id": pa.array(ids[row] if ops.n else row, pa.int64(), mask=~linked),
        "op_id": pa.array(ids[np.maximum(parent, 0)] if ops.n else row, pa.int64(),
                          mask=~has_op),
        "grid": args["grid"],
        "block": args["block"],
        "registers": args["registers"],
        "shared_mem": args["shared_memory"],
        "blocks_per_sm": args["blocks_per_sm"],
        "occupancy": args["occupancy"],
        "bytes": args["nbytes"],
    }


def build_memory(mem: MemoryEvents, ops: HostOps, *, base_ns: int, rank: int) -> dict[str, Any]:
    n = len(mem.ts)
    ts = to_ns(mem.ts, base_ns) if n else np.zeros(0, np.int64)
    op_row = ops.innermost_rows(ts, mem.thread)
    found = op_row >= 0
    op_id = ops.columns["id"][np.maximum(op_row, 0)] if ops.n else op_row
    args = mem.args.arrow

    # device keys as ints (None for anything else): a list or a dict there is data, not a key
    keys = list(zip(map(_int, mem.args.lists["device_type"]),
                    map(_int, mem.args.lists["device_id"])))
    names = {key: _device_name(*key) for key in set(keys)}
    nbytes = args["mem_bytes"].fill_null(0)
    alloc = (nbytes.to_numpy() >= 0).astype(np.int64)
    return {
        "rank": np.full(n, rank, np.int32),
        "device": list(map(names.__getitem__, keys)),
        "ts_ns": ts,
        "action": _ACTIONS[alloc],
        "addr": args["addr"],
        "bytes": nbytes,
        "allocated": args["total_allocated"],
        "reserved": args["total_reserved"],
        "category": pa.nulls(n, pa.string()),
        "op_id": pa.array(op_id, pa.int64(), mask=~found),
        "step": step_column(ts, ops.step_spans),
    }


def _device_name(device_type: Any, device_id: Any) -> str:
    dtype, did = _int(device_type), _int(device_id)
    kind = _DEVICE_TYPES.get(dtype if dtype is not None else 0, f"device{dtype}")
    return kind if kind == "cpu" or did is None or did < 0 else f"{kind}:{did}"
