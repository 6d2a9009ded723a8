"""Tables derived from a window's memory rows and census: ``memory_series`` (live bytes by
category over time, downsampled for plotting), ``allocator`` rows of the CPU timeline at each
boundary, ``modules``, ``stacks`` and ``grad_holders``."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dsprof.frames import internal_file
from dsprof.vocabulary import MEMORY_CATEGORIES as CATEGORIES

MAX_POINTS = 4000  # series points per device and capture; the busiest buckets keep their peak


def series(cols: Mapping[str, list[Any]], rank: int) -> dict[str, list[Any]]:
    """Live bytes by category after each event, per device, at most ~MAX_POINTS points.

    ``total`` is the memory table's ``allocated`` (the live total); the categories are running
    sums of categorized rows, and ``other`` is the rest of the total, so the columns add up.
    The running sums are cumulative sums over arrays, one per category (no loop per event).
    """
    out: dict[str, list[Any]] = {k: [] for k in ("rank", "device", "ts_ns", "step", "capture",
                                                   "total", *CATEGORIES)}
    n = len(cols["ts_ns"])
    if n == 0:
        return out
    known = [c for c in CATEGORIES if c != "other"]
    # column arrays through Arrow's C loops (a null is a missing time, total or category)
    ts_arr = pa.array(cols["ts_ns"], pa.int64())
    total_arr = pa.array(cols["allocated"], pa.int64())
    timed = _bools(ts_arr.is_valid())
    alloc_free = _bools(pc.is_in(pa.array(cols["action"], pa.string()),
                                 value_set=pa.array(["alloc", "free"])))
    cats = pc.index_in(pa.array(cols["category"], pa.string()),
                       value_set=pa.array(known)).fill_null(-1).to_numpy().astype(np.int64)
    nbytes = pa.array(cols["bytes"], pa.int64()).fill_null(0).to_numpy()
    has_total = _bools(total_arr.is_valid())
    all_totals = total_arr.fill_null(0).to_numpy()
    all_ts = ts_arr.fill_null(0).to_numpy()
    dev_code: dict[Any, int] = {}
    devs = np.fromiter((dev_code.setdefault(d, len(dev_code)) for d in cols["device"]),
                       np.int64, n)
    # devices in the order of their first timed alloc/free, as the rows come
    order = dict.fromkeys(devs[timed & alloc_free].tolist())
    names = {code: d for d, code in dev_code.items()}
    for code in order:
        on_device = devs == code
        rows = np.flatnonzero(timed & alloc_free & on_device)
        # rows before the window's first event (null time) seed the running sums
        seed_rows = ~timed & on_device & (cats >= 0)
        seed = np.zeros(len(known), np.int64)
        np.add.at(seed, cats[seed_rows], nbytes[seed_rows])
        # running sum of each category after each row
        contrib = np.zeros((len(rows), len(known)), np.int64)
        categorized = cats[rows] >= 0
        contrib[np.flatnonzero(categorized), cats[rows][categorized]] = nbytes[rows][categorized]
        running = np.cumsum(contrib, axis=0) + seed
        # rows without a total (a census's baseline on an accelerator, whose allocator total
        # already counts them) move the categories but make no point of their own
        with_total = has_total[rows]
        if not with_total.any():
            continue
        kept = rows[with_total]
        totals = all_totals[kept]
        points = running[with_total]
        keep = _keep(totals, all_ts[kept])
        sel = kept[keep].tolist()
        k_tot = totals[keep]
        k_pts = points[keep]
        m = len(sel)
        out["rank"].extend([rank] * m)
        out["device"].extend([names[code]] * m)
        out["ts_ns"].extend([cols["ts_ns"][j] for j in sel])
        out["step"].extend([cols["step"][j] for j in sel])
        out["capture"].extend([cols["capture"][j] for j in sel])
        out["total"].extend(k_tot.tolist())
        for i, c in enumerate(known):
            out[c].extend(k_pts[:, i].tolist())
        out["other"].extend((k_tot - k_pts.sum(axis=1)).tolist())
    return out


def _bools(arr: pa.Array) -> np.ndarray:
    return arr.fill_null(False).to_numpy(zero_copy_only=False)


def _keep(total: np.ndarray, ts: np.ndarray) -> list[int]:
    """Indices to keep: all when few; else per time bucket its last point and its peak."""
    n = len(total)
    if n <= MAX_POINTS:
        # several events at one instant: only the last state of the instant
        t = np.asarray(ts, np.int64)
        return np.flatnonzero(np.append(t[1:] != t[:-1], True)).tolist()
    # per bucket, its first peak (np.argmax's choice) and its last point, without a loop:
    # the non-empty buckets tile [0, n), so reduceat over their starts covers every point
    buckets = np.linspace(0, n, MAX_POINTS // 2 + 1).astype(np.int64)
    lo, hi = buckets[:-1], buckets[1:]
    lo, hi = lo[hi > lo], hi[hi > lo]
    bucket_of = np.repeat(np.arange(len(lo)), hi - lo)
    peak = np.maximum.reduceat(total, lo)
    first_peak = np.minimum.reduceat(np.where(total == peak[bucket_of], np.arange(n), n), lo)
    return np.unique(np.concatenate([first_peak, hi - 1, [np.argmax(total)]])).tolist()


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
