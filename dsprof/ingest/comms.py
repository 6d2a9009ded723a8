"""Collectives -> the ``comms`` table, from whichever events the backend left in the trace.

* NCCL / RCCL (and XCCL-style backends): each collective's device kernel carries
  ``Collective name``, ``In/Out msg nelems``, ``dtype``, ``Group size`` and the process group in
  its args. A row per such kernel: the transfer is the kernel; the call is the host op that
  launched it. A trace whose kernels carry none of this (a world of one, where NCCL launches
  nothing, or CPU-only traces of a GPU backend) gets a row per host ``record_param_comms`` event
  instead, timed by that host span.
* gloo writes no ``record_param_comms``: the calling thread records a ``c10d::allreduce_``-style
  op (async collectives return at once), and a gloo worker thread a ``gloo:all_reduce`` span
  with the element type and dims, which is the transfer (waiting for peers included). Gloo
  spans carry no id linking them to their call, so each is paired with the earliest unpaired
  call of the same collective and element count that started before it (worker threads can run
  buckets out of order, so plain order would mismatch them). The process group is the trace's
  only one (``distributedInfo.pg_config``); with several groups it is left null (and the group
  size is still known when every group has the same size).

Bandwidth follows nccl-tests (doc/PERFORMANCE.md): algbw = S / t with S the input size (the
output size for all_gather), busbw = algbw x 2(n-1)/n for all_reduce, x (n-1)/n for all_gather,
reduce_scatter and all_to_all, x 1 for broadcast, reduce, send and recv; none for barrier.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from dsprof.ingest.columns import positions
from dsprof.ingest.events import to_ns
from dsprof.ingest.host_ops import HostOps
from dsprof.ingest.split_trace import DeviceEvents, HostEvents
from dsprof.vocabulary import element_bytes

# element sizes of the type names NCCL ("Float") and the profiler's Input type ("float") use
_CANONICAL = {
    "allreduce": "all_reduce", "allgather": "all_gather", "reducescatter": "reduce_scatter",
    "alltoall": "all_to_all", "alltoallv": "all_to_all", "broadcast": "broadcast",
    "reduce": "reduce", "send": "send", "recv": "recv", "barrier": "barrier",
    "gather": "gather", "scatter": "scatter",
}
_SUFFIXES = ("_coalesced", "_base", "_into_tensor", "_tensor", "_single", "_")
# nccl-tests bus bandwidth factor, as a function of the group size n
BUS_FACTOR = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
    "send": lambda n: 1.0,
    "recv": lambda n: 1.0,
}


def collective_name(raw: str) -> str:
    """``c10d::allgather_``, ``gloo:all_gather``, ``_allgather_base``, ``allgather`` ->
    ``all_gather``; unknown names are kept, lower-cased."""
    name = raw.lower()
    for prefix in ("c10d::", "gloo:", "nccl:"):
        name = name.removeprefix(prefix)
    name = name.lstrip("_")
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name, changed = name[: -len(suffix)], True
    return _CANONICAL.get(name.replace("_", ""), name)


def bandwidths(collective: str, in_bytes: int | None, out_bytes: int | None, dur_ns: int,
               group_size: int | None) -> tuple[float | None, float | None]:
    """(algbw, busbw) in GB/s by nccl-tests' definitions; None where undefined."""
    size = out_bytes if collective == "all_gather" else in_bytes
    if collective not in BUS_FACTOR or not size or dur_ns <= 0:
        return None, None
    algbw = size / dur_ns  # bytes per ns == GB/s
    bus = BUS_FACTOR[collective](group_size) * algbw if group_size and group_size > 0 else None
    return algbw, bus


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return None


class _Rows:
    def __init__(self, rank: int):
        self.rank = rank
        self.cols: dict[str, list[Any]] = {k: [] for k in (
            "step", "collective", "group", "group_desc", "group_size", "dtype", "in_bytes",
            "out_bytes", "start_ns", "dur_ns", "call_ns", "algbw_gbps", "busbw_gbps", "op_id",
            "source")}

    def add(self, *, step, collective, group, group_desc, group_size, dtype, in_bytes,
            out_bytes, start_ns, dur_ns, call_ns, op_id, source) -> None:
        algbw, busbw = bandwidths(collective, in_bytes, out_bytes, dur_ns, group_size)
        for key, value in (("step", step), ("collective", collective), ("group", group),
                           ("group_desc", group_desc), ("group_size", group_size),
                           ("dtype", dtype), ("in_bytes", in_bytes), ("out_bytes", out_bytes),
                           ("start_ns", start_ns), ("dur_ns", dur_ns), ("call_ns", call_ns),
                           ("algbw_gbps", algbw), ("busbw_gbps", busbw), ("op_id", op_id),
                           ("source", source)):
            self.cols[key].append(value)

    def columns(self) -> dict[str, Any]:
        n = len(self.cols["step"])
        order = sorted(range(n), key=lambda i: (self.cols["start_ns"][i], i))
        out = {k: [v[i] for i in order] for k, v in self.cols.items()}
        out["rank"] = [self.rank] * n
        return out


def _msg_bytes(nelems: Any, dtype: Any) -> int | None:
    n, size = _int(nelems), element_bytes(dtype)
    return n * size if n is not None and size is not None else None


def build_comms(host: HostEvents, dev: DeviceEvents, ops: HostOps, kernels: dict[str, Any], *,
                base_ns: int, rank: int, dist_info: Any) -> dict[str, Any]:
    rows = _Rows(rank)
    op_row_of_id = _op_rows(ops)
    op_step = _as_list(ops.columns.get("step")) if ops.n else []
    op_start = ops.columns["start_ns"] if ops.n else np.zeros(0, np.int64)

    def op_info(op_id: int | None) -> tuple[int | None, int | None]:
        row = op_row_of_id(op_id)
        return (None, None) if row is None else (int(op_start[row]), op_step[row])

    # 1. device kernels that say which collective they are
    k_steps = _as_list(kernels["step"]) if len(dev.name) else []
    k_op = _as_list(kernels["op_id"]) if len(dev.name) else []
    k_kind = kernels["kind"] if len(dev.name) else []
    group, desc, size = _only_group(dist_info)
    # only kernels that name a collective or are communication kernels make rows
    talking = set(dev.args.objects) | {i for i, k in enumerate(k_kind) if k == "communication"}
    for i in sorted(talking):
        if dev.kind[i] != "kernel":
            continue
        a = dev.args.at(i)
        if a.collective is None:
            if k_kind[i] == "communication":
                _kernel_without_args(rows, i, dev.name[i], kernels, k_steps[i], k_op[i], ops,
                                     op_row_of_id, (group, desc, size))
            continue
        call_ns, _ = op_info(k_op[i])
        rows.add(step=k_steps[i], collective=collective_name(str(a.collective)),
                 group=_str(a.pg_name), group_desc=_str(a.pg_desc),
                 group_size=_int(a.group_size), dtype=_str(a.comm_dtype),
                 in_bytes=_msg_bytes(a.in_nelems, a.comm_dtype),
                 out_bytes=_msg_bytes(a.out_nelems, a.comm_dtype),
                 start_ns=int(kernels["start_ns"][i]), dur_ns=int(kernels["dur_ns"][i]),
                 call_ns=call_ns, op_id=k_op[i], source="nccl_kernel")
    if rows.cols["step"]:
        return rows.columns()

    # 2. host record_param_comms spans (a GPU backend that launched no kernel we saw)
    rpc = positions(host.name, "record_param_comms")
    if rpc:
        find = _op_finder(ops, host.thread[rpc], host.ts[rpc], base_ns)
        for i, row in zip(rpc, find):
            a = host.args.at(i)
            if a.collective is None:
                continue
            op_id = int(ops.columns["id"][row]) if row is not None else None
            start = int(to_ns([host.ts[i]], base_ns)[0])
            rows.add(step=op_step[row] if row is not None else None,
                     collective=collective_name(str(a.collective)), group=_str(a.pg_name),
                     group_desc=_str(a.pg_desc), group_size=_int(a.group_size),
                     dtype=_str(a.comm_dtype), in_bytes=_msg_bytes(a.in_nelems, a.comm_dtype),
                     out_bytes=_msg_bytes(a.out_nelems, a.comm_dtype), start_ns=start,
                     dur_ns=max(round(float(host.dur[i]) * 1000), 0), call_ns=start, op_id=op_id,
                     source="record_param_comms")
        if rows.cols["step"]:
            return rows.columns()

    # 3. gloo: worker spans paired with the c10d:: calls
    _gloo_rows(rows, ops, op_step, dist_info)
    return rows.columns()


def _kernel_without_args(rows: _Rows, i: int, name: str, kernels: dict[str, Any], step: Any,
                         op_id: Any, ops: HostOps, op_row_of_id: Any,
                         group: tuple[str | None, str | None, int | None]) -> None:
    """A communication kernel of an older trace, whose args do not name the collective: the
    ``nccl:<collective>`` span it was launched under names it and gives its dims and type;
    without one, the kernel name does (``ncclKernel_AllReduce_...`` -> all_reduce)."""
    row = op_row_of_id(op_id)
    span = None
    for _ in range(8):  # the launch's enclosing spans, innermost first
        if row is None or row < 0:
            break
        op_name = ops.columns["name"][row]
        if isinstance(op_name, str) and op_name.startswith("nccl:"):
            span = row
            break
        row = int(ops.parent_row[row])
    if span is not None:
        coll = collective_name(ops.columns["name"][span])
        numel = _first_numel(ops.columns["input_shapes"][span])
        dtype = _first_type(ops.columns["dtypes"][span])
        call_ns = int(ops.columns["start_ns"][span])
    else:
        part = name.split("(")[0].split("_")
        coll = collective_name(part[1]) if len(part) > 1 else "unknown"
        if coll == "sendrecv":
            coll = "send_recv"
        numel, dtype, call_ns = None, None, None
    size = element_bytes(dtype)
    in_bytes = numel * size if numel is not None and size else None
    rows.add(step=step, collective=coll, group=group[0], group_desc=group[1],
             group_size=group[2], dtype=dtype, in_bytes=in_bytes, out_bytes=in_bytes,
             start_ns=int(kernels["start_ns"][i]), dur_ns=int(kernels["dur_ns"][i]),
             call_ns=call_ns, op_id=op_id, source="nccl_kernel")


def _gloo_rows(rows: _Rows, ops: HostOps, op_step: list[Any], dist_info: Any) -> None:
    if not ops.n:
        return
    names = ops.columns["name"]
    distinct = set(names.tolist())
    workers_names = {n for n in distinct if isinstance(n, str) and n.startswith("gloo:")}
    if not workers_names:
        return
    caller_names = {n for n in distinct if isinstance(n, str) and n.startswith("c10d::")}
    cat = ops.columns["cat"]
    starts, durs, ids = ops.columns["start_ns"], ops.columns["dur_ns"], ops.columns["id"]
    shapes, dtypes = ops.columns["input_shapes"], ops.columns["dtypes"]
    workers, callers = [], []
    for row, name in enumerate(names.tolist()):
        if name in workers_names and cat[row] == "user_annotation":
            workers.append(row)
        elif name in caller_names and cat[row] == "cpu_op":
            callers.append(row)
    group, desc, size = _only_group(dist_info)
    # calls by collective, in start order, with their element count
    pending: dict[str, list[tuple[int, int | None, int]]] = {}
    for row in sorted(callers, key=lambda r: int(starts[r])):
        coll = collective_name(names[row])
        pending.setdefault(coll, []).append((int(starts[row]), _first_numel(shapes[row]), row))
    for row in sorted(workers, key=lambda r: int(starts[r])):
        coll = collective_name(names[row])
        start = int(starts[row])
        numel = _first_numel(shapes[row])
        dtype = _first_type(dtypes[row])
        calls = pending.get(coll, [])
        pick = next((k for k, c in enumerate(calls) if c[0] <= start and c[1] == numel), None)
        if pick is None:
            pick = next((k for k, c in enumerate(calls) if c[0] <= start), None)
        call_row = calls.pop(pick)[2] if pick is not None else None
        in_bytes = numel * element_bytes(dtype) if numel is not None and element_bytes(dtype) \
            else None
        out_bytes = in_bytes
        if in_bytes is not None and size:
            if coll == "all_gather":
                out_bytes = in_bytes * size
            elif coll == "reduce_scatter":
                out_bytes = in_bytes // size
        rows.add(step=op_step[call_row] if call_row is not None else op_step[row],
                 collective=coll, group=group, group_desc=desc, group_size=size, dtype=dtype,
                 in_bytes=in_bytes, out_bytes=out_bytes, start_ns=start, dur_ns=int(durs[row]),
                 call_ns=int(starts[call_row]) if call_row is not None else None,
                 op_id=int(ids[call_row]) if call_row is not None else None, source="gloo")


def _only_group(dist_info: Any) -> tuple[str | None, str | None, int | None]:
    """The process group every collective must belong to when the trace lists just one."""
    if not isinstance(dist_info, dict):
        return None, None, None
    pgs = dist_info.get("pg_config")
    if isinstance(pgs, list) and len(pgs) == 1 and isinstance(pgs[0], dict):
        pg = pgs[0]
        return _str(pg.get("pg_name")), _str(pg.get("pg_desc")), _int(pg.get("pg_size"))
    sizes = {_int(pg.get("pg_size")) for pg in pgs or [] if isinstance(pg, dict)}
    if len(sizes) == 1 and None not in sizes:  # several groups, one size: the size is known
        return None, None, sizes.pop()
    if not pgs and _int(dist_info.get("world_size")):
        return None, None, _int(dist_info.get("world_size"))
    return None, None, None


def _first_numel(text: Any) -> int | None:
    """Element count of the first tensor in an ``Input Dims`` JSON text (tensor lists of the
    c10d ops nest one level deeper; leading empty entries are skipped)."""
    if not isinstance(text, str):
        return None
    try:
        dims = json.loads(text)
    except ValueError:
        return None
    for entry in dims if isinstance(dims, list) else []:
        if not entry:
            continue
        tensor = entry[0] if isinstance(entry[0], list) else entry
        if all(isinstance(d, int) for d in tensor):
            return int(np.prod(tensor)) if tensor else 1
    return None


def _first_type(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        types = json.loads(text)
    except ValueError:
        return None
    return next((t for t in types if isinstance(t, str) and t), None) \
        if isinstance(types, list) else None


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _as_list(col: Any) -> list[Any]:
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return col.to_pylist()
    return list(col)


def _op_rows(ops: HostOps):
    """ops.id -> row (ids are consecutive from the first row's)."""
    first = int(ops.columns["id"][0]) if ops.n else 0

    def row_of(op_id: Any) -> int | None:
        if op_id is None or not ops.n:
            return None
        row = int(op_id) - first
        return row if 0 <= row < ops.n else None

    return row_of


def _op_finder(ops: HostOps, threads: np.ndarray, ts: np.ndarray, base_ns: int
               ) -> list[int | None]:
    """Row of the op at each (thread, start), None when it was not kept."""
    if not ops.n:
        return [None] * len(ts)
    starts = to_ns(ts, base_ns)
    # only the ops that start when a wanted one does go into the lookup (a loop over every op
    # of the trace cost more than the rest of the comms table); a later row wins a tie
    op_start = np.asarray(ops.columns["start_ns"], np.int64)
    op_thread = np.asarray(ops.columns["thread"])
    rows = np.flatnonzero(np.isin(op_start, np.asarray(starts, np.int64)))
    key = {(int(op_thread[r]), int(op_start[r])): int(r) for r in rows.tolist()}
    return [key.get((int(t), int(s))) for t, s in zip(threads, starts)]
