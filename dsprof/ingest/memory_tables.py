"""Tables derived from a window's memory rows and census: ``memory_series`` (live bytes by
category over time, downsampled for plotting), ``allocator`` rows of the CPU timeline at each
boundary, ``modules``, ``stacks`` and ``grad_holders``."""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from dsprof.collectors.memory_census import CATEGORIES, internal_file

MAX_POINTS = 4000  # series points per device and capture; the busiest buckets keep their peak


def series(cols: Mapping[str, list[Any]], rank: int) -> dict[str, list[Any]]:
    """Live bytes by category after each event, per device, at most ~MAX_POINTS points.

    ``total`` is the memory table's ``allocated`` (the live total); the categories are running
    sums of categorized rows, and ``other`` is the rest of the total, so the columns add up.
    """
    out: dict[str, list[Any]] = {k: [] for k in ("rank", "device", "ts_ns", "step", "capture",
                                                   "total", *CATEGORIES)}
    n = len(cols["ts_ns"])
    by_device: dict[str, list[int]] = {}
    for j in range(n):
        if cols["ts_ns"][j] is not None and cols["action"][j] in ("alloc", "free"):
            by_device.setdefault(cols["device"][j], []).append(j)
    known = [c for c in CATEGORIES if c != "other"]
    for device, rows in by_device.items():
        running = dict.fromkeys(known, 0)
        # rows before the window's first event (null time) seed the running sums
        for j in range(n):
            if cols["ts_ns"][j] is None and cols["device"][j] == device and \
                    cols["category"][j] in running:
                running[cols["category"][j]] += cols["bytes"][j]
        # rows without a total (a census's baseline on an accelerator, whose allocator total
        # already counts them) move the categories but make no point of their own
        pts: list[list[int]] = []
        kept: list[int] = []
        for j in rows:
            cat = cols["category"][j]
            if cat in running:
                running[cat] += cols["bytes"][j]
            if cols["allocated"][j] is not None:
                pts.append([running[c] for c in known] + [cols["allocated"][j]])
                kept.append(j)
        if not kept:
            continue
        rows = kept
        points = np.asarray(pts, np.int64)
        keep = _keep(points[:, -1], [cols["ts_ns"][j] for j in rows])
        for k in keep:
            j = rows[k]
            out["rank"].append(rank)
            out["device"].append(device)
            out["ts_ns"].append(cols["ts_ns"][j])
            out["step"].append(cols["step"][j])
            out["capture"].append(cols["capture"][j])
            total = int(points[k, -1])
            out["total"].append(total)
            for i, c in enumerate(known):
                out[c].append(int(points[k, i]))
            out["other"].append(total - int(points[k, :-1].sum()))
    return out


def _keep(total: np.ndarray, ts: list[int]) -> list[int]:
    """Indices to keep: all when few; else per time bucket its last point and its peak."""
    n = len(total)
    if n <= MAX_POINTS:
        # several events at one instant: only the last state of the instant
        return [k for k in range(n) if k == n - 1 or ts[k + 1] != ts[k]]
    buckets = np.linspace(0, n, MAX_POINTS // 2 + 1).astype(np.int64)
    keep: set[int] = set()
    for lo, hi in itertools.pairwise(buckets):
        if hi > lo:
            keep.add(int(lo + np.argmax(total[lo:hi])))
            keep.add(int(hi - 1))
    keep.add(int(np.argmax(total)))
    return sorted(keep)


def timeline_allocator(cols: Mapping[str, list[Any]], census: dict[str, Any],
                       rank: int) -> dict[str, list[Any]]:
    """CPU: the live total at each boundary of the window, as ``allocator`` rows."""
    out: dict[str, list[Any]] = {k: [] for k in ALLOCATOR_COLUMNS}
    pts = [(t, a) for t, a, d, act in zip(cols["ts_ns"], cols["allocated"], cols["device"],
                                          cols["action"])
           if d == "cpu" and t is not None and a is not None and act in ("alloc", "free")]
    if not pts:
        return out
    times = [t for t, _ in pts]
    marks = [(census["steps"][0] - 1, census["start_ns"])] + \
        [(b["step"], b["ts_ns"]) for b in census["boundaries"]]
    baseline = sum(size for d, _p, size, *_ in census["baseline"] if d == "cpu")
    for step, t in marks:
        k = bisect_right(times, t) - 1
        _allocator_row(out, rank, "cpu", step, t, "timeline",
                       allocated=pts[k][1] if k >= 0 else baseline)
    return out


ALLOCATOR_COLUMNS = ("rank", "device", "step", "ts_ns", "source", "allocated", "reserved",
                     "inactive_split", "largest_free", "alloc_retries", "ooms", "device_allocs",
                     "device_frees")


def _allocator_row(out: dict[str, list[Any]], rank: int, device: str, step: int | None,
                   ts: int | None, source: str, **values: Any) -> None:
    row = {"rank": rank, "device": device, "step": step, "ts_ns": ts, "source": source, **values}
    for k in ALLOCATOR_COLUMNS:
        out[k].append(row.get(k))


def allocator_stats(lines: list[dict[str, Any]], rank: int) -> dict[str, list[Any]]:
    """``raw/rank<R>/allocator.jsonl`` (memory_stats at each boundary) -> ``allocator`` rows."""
    out: dict[str, list[Any]] = {k: [] for k in ALLOCATOR_COLUMNS}
    for rec in lines:
        _allocator_row(out, rank, rec.get("device", "cuda:0"), rec.get("step"), rec.get("ts_ns"),
                       "memory_stats", **{k: rec.get(k) for k in ALLOCATOR_COLUMNS[5:]})
    return out


def stacks(census: dict[str, Any], rank: int, stack_base: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"rank": [], "stack_id": [], "site": [], "frames": []}
    for sid, frames in census.get("sites", []):
        add_stack(out, rank, stack_base + sid, frames)
    return out


def add_stack(out: dict[str, list[Any]], rank: int, stack_id: int, frames: list[Any]) -> None:
    """A ``stacks`` row; the site is the innermost frame of user Python code."""
    user = [f for f in frames if str(f[0]).endswith(".py") and not internal_file(str(f[0]))]
    f = user[0] if user else frames[0] if frames else ["?", 0, "?"]
    out["rank"].append(rank)
    out["stack_id"].append(stack_id)
    out["site"].append(f"{f[0]}:{f[1]} in {f[2]}")
    out["frames"].append(orjson.dumps(frames).decode())


def holders(census: dict[str, Any], rank: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {k: [] for k in ("rank", "step", "name", "function", "site",
                                                  "statement", "graph_nodes")}
    for step, name, function, site, statement, nodes in census.get("holders", []):
        for k, v in zip(out, (rank, step, name, function, site, statement, nodes)):
            out[k].append(v)
    return out


def modules(census: dict[str, Any], ops: Mapping[str, Any], rank: int) -> dict[str, list[Any]]:
    """The ``modules`` rows of one window.

    activation_bytes of a module = the saved storages charged to it or to a module below it,
    per forward pass (a step that accumulates N micro-batches runs N forwards, each freeing
    what it saved in its own backward), the largest; fwd_ns = its forward spans per step; bwd_ns = backward ops
    charged to its subtree (self time) per step; flops = forward FLOPs of its subtree per step.
    """
    steps = census["steps"]
    n_steps = max(len(steps), 1)
    self_by_step: dict[tuple[int, str], int] = {}
    for step, _d, _p, size, created_in, _saver, _site, _t in census["saved"]:
        if created_in:
            key = (step, created_in)
            self_by_step[key] = self_by_step.get(key, 0) + size
    names = [m[0] for m in census["modules"]]
    roots = {m[0] for m in census["modules"] if m[2] == 0}
    calls: dict[str, int] = {}
    forwards: dict[int, int] = {}  # step -> forward passes in it (calls of a root module)
    for step, name, count in census["calls"]:
        calls[name] = max(calls.get(name, 0), count)
        if name in roots:
            forwards[step] = max(forwards.get(step, 1), count)
    self_by_step = {(s, m): b // forwards.get(s, 1) for (s, m), b in self_by_step.items()}
    fwd, bwd, flops = _op_sums(ops)
    out: dict[str, list[Any]] = {k: [] for k in (
        "rank", "name", "type", "depth", "params", "param_bytes", "activation_bytes",
        "self_activation_bytes", "calls", "fwd_ns", "bwd_ns", "flops")}
    for name, mtype, depth, params, pbytes in census["modules"]:
        prefix = name + "."
        subtree = [m for m in names if m == name or m.startswith(prefix)]
        incl = max((sum(self_by_step.get((s, m), 0) for m in subtree) for s in steps), default=0)
        own = max((self_by_step.get((s, name), 0) for s in steps), default=0)
        f = sum(v for k, v in fwd.items() if k == name)
        b = sum(v for k, v in bwd.items() if k == name or k.startswith(prefix))
        fl = sum(v for k, v in flops.items() if k == name or k.startswith(prefix))
        for k, v in zip(out, (rank, name, mtype, depth, params, pbytes, incl, own,
                              calls.get(name, 0), f // n_steps, b // n_steps,
                              fl // n_steps if fl else None)):
            out[k].append(v)
    return out


def merge_modules(parts: list[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """One row per module from several windows: the largest activation bytes and calls, the
    mean of the per-step times and FLOPs."""
    rows: dict[str, list[dict[str, Any]]] = {}
    order: list[str] = []
    for part in parts:
        for i, name in enumerate(part["name"]):
            if name not in rows:
                rows[name] = []
                order.append(name)
            rows[name].append({k: v[i] for k, v in part.items()})
    out: dict[str, list[Any]] = {k: [] for k in parts[0]}
    for name in order:
        rs = rows[name]
        for k, column in out.items():
            values = [r[k] for r in rs]
            if k in ("activation_bytes", "self_activation_bytes", "calls"):
                column.append(max(values))
            elif k in ("fwd_ns", "bwd_ns", "flops"):
                known = [v for v in values if v is not None]
                column.append(sum(known) // len(known) if known else None)
            else:
                column.append(values[0])
    return out


def _op_sums(ops: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    fwd: dict[str, int] = {}
    bwd: dict[str, int] = {}
    flops: dict[str, int] = {}
    cat = _list(ops["cat"])
    name = _list(ops["name"])
    dur = _list(ops["dur_ns"])
    self_ns = _list(ops["self_ns"])
    module = _list(ops["module"])
    phase = _list(ops["phase"])
    fl = _list(ops["flops"])
    for i in range(len(cat)):
        if cat[i] == "module":
            fwd[name[i]] = fwd.get(name[i], 0) + dur[i]
        elif module[i] is not None and cat[i] == "cpu_op":
            if phase[i] == "backward":
                bwd[module[i]] = bwd.get(module[i], 0) + self_ns[i]
            elif phase[i] == "forward" and fl[i]:
                flops[module[i]] = flops.get(module[i], 0) + fl[i]
    return fwd, bwd, flops


def _list(values: Any) -> list[Any]:
    if hasattr(values, "to_pylist"):
        return values.to_pylist()
    if isinstance(values, np.ndarray):
        return values.tolist()
    return list(values)
