"""A window's allocation events + the memory collector's census -> categorized ``memory`` rows.

Events come from the profiler's ``[memory]`` instants (or a CUDA snapshot's trace). Each alloc
is paired with its free by address, giving ``free_ns``. Then:

* **Baseline** (dsprof runs): the storages alive when the window began are added as
  ``source = baseline`` allocs at the window's start, freed when their weak reference died.
* **Live total** (``allocated``): on CPU the profiler's ``Total Allocated`` is not the live
  total (it counts only what it saw allocated, across every profiling session of the process,
  and misses frees of older blocks), so dsprof recomputes it: baseline alive + the window's
  allocations not yet freed. A free of a block the window did not allocate is dropped there
  (the baseline's frees come from the census). On an accelerator the allocator's own total is
  exact and is kept.
* **Category**, for an allocation the window made, from the census by address at the moment
  it was live: ``parameter``/``gradient``/``optimizer_state`` (what it was at a step boundary),
  ``input`` (an argument of the model's root forward), ``activation`` (saved for backward; its
  ``module`` is the module it was created in), else ``temporary`` (freed before its step
  ended) or ``other``. Free rows take their alloc's category.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from dsprof.vocabulary import MEMORY_PRIORITY as PRIORITY

_TOL_NS = 50_000  # clock skew allowed between the collector's and the profiler's timestamps

COLUMNS = ("rank", "device", "ts_ns", "action", "addr", "bytes", "allocated", "reserved",
           "category", "op_id", "step", "free_ns", "module", "stack_id", "source", "capture")


@dataclass
class Rows:
    """Memory rows being built, column by column."""

    cols: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in COLUMNS})

    def __len__(self) -> int:
        return len(self.cols["ts_ns"])

    def add(self, **values: Any) -> int:
        for c in COLUMNS:
            self.cols[c].append(values.get(c))
        return len(self) - 1


def attribute(mem: Mapping[str, Any], op_module: Mapping[int, str], census: dict[str, Any] | None,
              rank: int, stack_base: int = 0, capture: int = 0) -> dict[str, list[Any]]:
    """The window's memory rows (see the module docstring), sorted by time.

    Args:
        mem: columns as :func:`dsprof.ingest.device_ops.build_memory` builds them; a
            ``stack_id`` column may come with them (snapshots).
        op_module: ops.id -> module path.
        census: the collector's ``window-<K>.census`` document, None for imported traces.
        rank: the rank.
        stack_base: added to the census's site ids (stack ids are unique per rank).
        capture: the capture number written on every row.
    """
    n = len(mem["ts_ns"])
    ts = _pylist(mem["ts_ns"])
    dev = _pylist(mem["device"])
    addr = _pylist(mem["addr"])
    nbytes = _pylist(mem["bytes"])
    reported = _pylist(mem["allocated"])
    reserved = _pylist(mem["reserved"])
    op_id = _pylist(mem["op_id"])
    step = _pylist(mem["step"])
    action = _pylist(mem["action"])
    stacks = _pylist(mem["stack_id"]) if "stack_id" in mem else [None] * n
    source = _pylist(mem["source"]) if "source" in mem else ["profiler"] * n
    if census is None and None not in ts:
        # imported traces: no census, so pairing is all there is to do, done over arrays
        fast = _paired_without_census(ts, dev, addr, nbytes, reported, reserved, op_id, step,
                                      action, stacks, source, op_module, rank)
        if fast is not None:
            fast.cols["capture"] = [capture] * len(fast)
            return _finish(fast, recompute=False)
    order = sorted(range(n), key=lambda i: (ts[i] is not None, ts[i] or 0))

    out = Rows()
    live: dict[tuple[str, int], int] = {}
    base_rows: dict[tuple[str, int], int] = {}
    first_step = census["steps"][0] if census and census["steps"] else None
    if census is not None:
        for d, p, size, cat, module, death in census["baseline"]:
            j = out.add(rank=rank, device=d, ts_ns=census["start_ns"], action="alloc", addr=p,
                        bytes=size, category=cat, step=first_step, source="baseline",
                        module=module or None)
            base_rows[(d, p)] = j
            if death is not None and d == "cpu":
                out.cols["free_ns"][j] = death
                out.add(rank=rank, device=d, ts_ns=death, action="free", addr=p, bytes=-size,
                        category=cat, step=None, source="baseline", module=module or None)
    for i in order:
        d, a, b = dev[i], addr[i], nbytes[i]
        act = action[i]
        if act not in ("alloc", "free"):  # segment and oom rows of snapshots
            out.add(rank=rank, device=d, ts_ns=ts[i], action=act, addr=a, bytes=b,
                    allocated=reported[i], reserved=reserved[i], step=step[i],
                    stack_id=stacks[i], source=source[i])
            continue
        key = (d, a)
        if ts[i] is None and key in base_rows:
            # a snapshot's block older than its trace that the census already counted
            base = base_rows[key]
            out.cols["stack_id"][base] = out.cols["stack_id"][base] or stacks[i]
            live[key] = base
            continue
        if a is None:  # old traces have no addresses: no pairing
            out.add(rank=rank, device=d, ts_ns=ts[i], action=act, addr=None, bytes=b,
                    allocated=reported[i], reserved=reserved[i], op_id=op_id[i], step=step[i],
                    module=op_module.get(op_id[i]) if op_id[i] is not None else None,
                    stack_id=stacks[i], source=source[i])
            continue
        if b >= 0:
            prev = live.pop(key, None)
            if prev is not None and out.cols["free_ns"][prev] is None:
                out.cols["free_ns"][prev] = ts[i]  # its free went unreported
            live[key] = out.add(rank=rank, device=d, ts_ns=ts[i], action="alloc", addr=a,
                                bytes=b, allocated=reported[i], reserved=reserved[i],
                                op_id=op_id[i], step=step[i], stack_id=stacks[i],
                                module=op_module.get(op_id[i]) if op_id[i] is not None else None,
                                source=source[i])
            continue
        j = live.pop(key, None)
        if j is not None:
            out.cols["free_ns"][j] = ts[i]
            b = -out.cols["bytes"][j]
        elif d == "cpu" and census is not None:
            continue  # a block older than the window: its free is the baseline's to report
        elif key in base_rows and out.cols["free_ns"][base_rows[key]] is None:
            out.cols["free_ns"][base_rows[key]] = ts[i]
            j = base_rows[key]
        out.add(rank=rank, device=d, ts_ns=ts[i], action="free", addr=a, bytes=b,
                allocated=reported[i], reserved=reserved[i], op_id=op_id[i], step=step[i],
                stack_id=out.cols["stack_id"][j] if j is not None else None,
                module=out.cols["module"][j] if j is not None else None, source=source[i],
                category=out.cols["category"][j] if j is not None else None)
    if census is not None:
        _categorize(out, census, stack_base)
    out.cols["capture"] = [capture] * len(out)
    return _finish(out, recompute=census is not None)


def _paired_without_census(ts: list[int], dev: list[Any], addr: list[Any], nbytes: list[Any],
                           reported: list[Any], reserved: list[Any], op_id: list[Any],
                           step: list[Any], action: list[Any], stacks: list[Any],
                           source: list[Any], op_module: Mapping[int, str],
                           rank: int) -> Rows | None:
    """:func:`attribute`'s rows for a window without census and with every event timed: the
    same rows as its event loop, computed over arrays (tests/unit/test_memory_window.py checks
    both give the same table on real traces). None when an address does not fit int64.

    Without a census the loop only pairs each alloc with its free by (device, address): in the
    time-ordered events of one address, a free belongs to the alloc just before it (if the
    event before it is a free, that one took the alloc), and an alloc ends at the next event
    of its address (its free, or an alloc that reuses the address: its free went unreported).
    """
    n = len(ts)
    ts_a = np.asarray(ts, np.int64)
    order = np.argsort(ts_a, kind="stable")
    pairable = np.fromiter(((a is not None and act in ("alloc", "free"))
                            for a, act in zip(addr, action)), bool, n)
    try:
        addr_a = np.fromiter((a if a is not None else 0 for a in addr), np.int64, n)
    except OverflowError:
        return None
    dev_codes: dict[Any, int] = {}
    dev_a = np.fromiter((dev_codes.setdefault(d, len(dev_codes)) for d in dev), np.int64, n)
    bytes_a = np.fromiter((b if b is not None else 0 for b in nbytes), np.int64, n)
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)  # event -> its row
    # pairable events grouped by (device, address), in time order within a group
    ev = np.flatnonzero(pairable)
    ev = ev[np.lexsort((pos[ev], addr_a[ev], dev_a[ev]))]
    same_prev = np.zeros(len(ev), bool)
    if len(ev) > 1:
        same_prev[1:] = (dev_a[ev[1:]] == dev_a[ev[:-1]]) & (addr_a[ev[1:]] == addr_a[ev[:-1]])
    is_alloc = bytes_a[ev] >= 0
    prev_alloc = np.zeros(len(ev), bool)
    prev_alloc[1:] = same_prev[1:] & is_alloc[:-1]
    # allocs: ended by the next event of their address
    alloc_end = np.full(n, -1, np.int64)  # event -> the event that ends it
    ends_next = np.zeros(len(ev), bool)
    ends_next[:-1] = same_prev[1:] & is_alloc[:-1]
    alloc_end[ev[:-1][ends_next[:-1]]] = ev[1:][ends_next[:-1]]
    # frees: matched with the alloc just before them
    free_of = np.full(n, -1, np.int64)  # free event -> its alloc event
    matched = ~is_alloc & prev_alloc
    free_of[ev[matched]] = ev[np.flatnonzero(matched) - 1]

    modules = [op_module.get(o) if o is not None else None for o in op_id]
    out = Rows()
    c = out.cols
    idx = order.tolist()
    c["rank"] = [rank] * n
    c["device"] = [dev[i] for i in idx]
    c["ts_ns"] = [ts[i] for i in idx]
    c["addr"] = [addr[i] for i in idx]
    c["allocated"] = [reported[i] for i in idx]
    c["reserved"] = [reserved[i] for i in idx]
    c["step"] = [step[i] for i in idx]
    c["source"] = [source[i] for i in idx]
    c["category"] = [None] * n
    # row kinds: 0 segment/oom (no op), 1 alloc, 2 free, 3 alloc/free without an address
    alloc_free = np.fromiter((act in ("alloc", "free") for act in action), bool, n)
    kind = np.where(~alloc_free, 0, np.where(~pairable, 3, np.where(bytes_a >= 0, 1, 2)))
    kinds = kind[order].tolist()
    c["action"] = [action[i] if k in (0, 3) else "alloc" if k == 1 else "free"
                   for i, k in zip(idx, kinds)]
    c["op_id"] = [op_id[i] if k else None for i, k in zip(idx, kinds)]
    end_o, of_o = alloc_end[order].tolist(), free_of[order].tolist()
    c["free_ns"] = [ts[e] if e >= 0 else None for e in end_o]
    c["bytes"] = [-nbytes[a] if a >= 0 else nbytes[i] for i, a in zip(idx, of_o)]
    # a free row takes its alloc's stack and module (none when it has no alloc)
    c["stack_id"] = [stacks[a] if a >= 0 else None if k == 2 else stacks[i]
                     for i, k, a in zip(idx, kinds, of_o)]
    c["module"] = [modules[a] if a >= 0 else None if k in (0, 2) else modules[i]
                   for i, k, a in zip(idx, kinds, of_o)]
    return out


def _categorize(out: Rows, census: dict[str, Any], stack_base: int) -> None:
    c = out.cols
    allocs: dict[tuple[str, int], list[int]] = {}
    for j in range(len(out)):
        if c["action"][j] == "alloc" and c["source"][j] != "baseline" and c["ts_ns"][j] is not None:
            allocs.setdefault((c["device"][j], c["addr"][j]), []).append(j)
    starts = {k: [c["ts_ns"][j] for j in js] for k, js in allocs.items()}

    def find(d: str, p: int, t: int) -> int | None:
        js = allocs.get((d, p))
        if not js:
            return None
        k = bisect_right(starts[(d, p)], t + _TOL_NS) - 1
        while k >= 0:
            j = js[k]
            free = c["free_ns"][j]
            if free is None or free > t - _TOL_NS:
                return j
            k -= 1
        return None

    def mark(j: int | None, cat: str) -> bool:
        if j is None:
            return False
        old = c["category"][j]
        if old is None or PRIORITY[cat] < PRIORITY[old]:
            c["category"][j] = cat
            return True
        return False

    for b in census["boundaries"]:
        for d, p, _size, cat in b["keys"]:
            mark(find(d, p, b["ts_ns"]), cat)
    for _step, d, p, _size, t in census["inputs"]:
        mark(find(d, p, t), "input")
    for _step, d, p, _size, created_in, saver, site, t in census["saved"]:
        j = find(d, p, t)
        if mark(j, "activation"):
            c["module"][j] = created_in or saver or c["module"][j]
            if site is not None:
                c["stack_id"][j] = stack_base + site
    ends = {b["step"]: b["ts_ns"] for b in census["boundaries"]}
    end_ns = census.get("end_ns")
    for js in allocs.values():
        for j in js:
            if c["category"][j] is None:
                free, s = c["free_ns"][j], c["step"][j]
                end = ends.get(s, end_ns)
                c["category"][j] = "temporary" if free is not None and end is not None and \
                    free <= end else "other"
    # free rows take their alloc's category and module
    owner: dict[tuple[str, int, int], int] = {}
    for js in allocs.values():
        for j in js:
            if c["free_ns"][j] is not None:
                owner[(c["device"][j], c["addr"][j], c["free_ns"][j])] = j
    for j in range(len(out)):
        if c["action"][j] == "free" and c["source"][j] != "baseline":
            a = owner.get((c["device"][j], c["addr"][j], c["ts_ns"][j]))
            if a is not None:
                c["category"][j], c["module"][j] = c["category"][a], c["module"][a]
                c["stack_id"][j] = c["stack_id"][a]


def _finish(out: Rows, recompute: bool) -> dict[str, list[Any]]:
    c = out.cols
    n = len(out)
    # pre-existing rows (null time) first, then by time; a baseline alloc before anything at
    # the same instant
    order = sorted(range(n), key=lambda j: (c["ts_ns"][j] is not None, c["ts_ns"][j] or 0,
                                            c["source"][j] != "baseline"))
    take = itemgetter(*order) if n > 1 else None
    cols = {k: list(take(v)) if take is not None else list(v) for k, v in c.items()}
    _fill_missing_totals(cols)
    if recompute:
        running: dict[str, int] = {}
        for j in range(n):
            d = cols["device"][j]
            if d != "cpu":
                continue
            if cols["action"][j] in ("alloc", "free"):
                running[d] = running.get(d, 0) + cols["bytes"][j]
            cols["allocated"][j] = running.get(d, 0)
    return cols


def _fill_missing_totals(cols: dict[str, list[Any]]) -> None:
    """Traces that report no ``Total Allocated`` (2021 Kineto: ``Bytes`` only) get the running
    sum of ``bytes`` per device, raised by the least constant that keeps it >= 0: frees of
    blocks allocated before the capture prove at least that much was live when it began, so the
    curve is a lower bound with the true shape."""
    rows: dict[str, list[int]] = {}
    for j, (d, a, act) in enumerate(zip(cols["device"], cols["allocated"], cols["action"])):
        if act in ("alloc", "free"):
            rows.setdefault(d, []).append(j)
    for js in rows.values():
        if any(cols["allocated"][j] is not None for j in js):
            continue
        running, low, sums = 0, 0, []
        for j in js:
            running += cols["bytes"][j]
            low = min(low, running)
            sums.append(running)
        for j, v in zip(js, sums):
            cols["allocated"][j] = v - low


def _pylist(values: Any) -> list[Any]:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.to_pylist()
    if isinstance(values, np.ndarray):
        return values.tolist()
    return list(values)


def peak_breakdown(cols: Mapping[str, list[Any]]) -> dict[str, tuple[int, int | None, dict[str, int]]]:
    """Per device: (peak live bytes, when, live bytes by category then)."""
    out: dict[str, tuple[int, int | None, dict[str, int]]] = {}
    running: dict[str, dict[str, int]] = {}
    for j in range(len(cols["ts_ns"])):
        d, a = cols["device"][j], cols["allocated"][j]
        if cols["action"][j] not in ("alloc", "free"):
            continue
        cats = running.setdefault(d, {})
        cat = cols["category"][j] or "other"
        cats[cat] = cats.get(cat, 0) + cols["bytes"][j]
        if a is not None and (d not in out or a > out[d][0]):
            out[d] = (a, cols["ts_ns"][j], {k: v for k, v in cats.items() if v})
    return out


def window_cols(trace_path: Any, census: dict[str, Any]) -> dict[str, list[Any]]:
    """A saved window's memory rows, straight from its trace and census."""
    from dsprof.ingest import device_ops
    from dsprof.ingest.host_ops import build_host_ops
    from dsprof.ingest.trace_file import load

    doc = load(trace_path)
    parsed = doc.split()
    ops = build_host_ops(parsed.host, base_ns=doc.base_ns, rank=0, first_id=0)
    mem = device_ops.build_memory(parsed.memory, ops, base_ns=doc.base_ns, rank=0)
    return attribute(mem, {}, census, rank=0)


def window_peak(trace_path: Any, census: dict[str, Any]) -> tuple[int, int | None]:
    """Peak live bytes of a window (the largest device's) and when; for the budget check."""
    peaks = peak_breakdown(window_cols(trace_path, census))
    if not peaks:
        return 0, None
    peak, ts, _ = max(peaks.values(), key=lambda p: p[0])
    return peak, ts
