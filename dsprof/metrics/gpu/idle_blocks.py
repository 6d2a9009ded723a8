"""Whole-GPU idle blocks per step, and what the host was doing during them.

Contract (views ``kernels``, ``ops`` and, when present, ``steps`` as in :mod:`dsprof.schema`):

* **Iterations.** The steps that hold kernels (``steps``: profiled, not disturbed by dsprof
  other than by recording them). A trace that marks no steps (the ``torch.autograd.profiler``
  API of 2021) is cut at each ``DataLoader.__next__`` start of the thread that fetches batches
  (else at each optimizer step's end); the first iteration holds one-time work (cuDNN
  autotuning, allocator growth) and is left out when two others remain.
* **Idle blocks.** Device activity of every stream (kernels, memcpy, memset; not sync
  markers) is merged into busy intervals; the complement inside an iteration, in pieces of at
  least ``MIN_BLOCK_NS``, are the blocks in which the whole GPU did nothing.
* **Attribution.** Each nanosecond of a block goes to the first of these the host (any thread)
  was in: ``data`` (a DataLoader span, phase ``data``), ``sync`` (a blocking runtime call:
  the host waits for the device), ``after_sync`` (from a blocking call's end to the next device
  activity: what ``host_sync`` charges), ``launch`` (kernel-launch API calls), ``host`` (any
  other CPU op or annotation: Python and framework work), else ``unexplained`` (no span at all:
  Python between ops, or a process that was off the CPU).
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_BLOCK_NS = 1_000_000
CLASSES = ("data", "sync", "after_sync", "launch", "host", "unexplained")
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy", "hipStreamSynchronize", "hipDeviceSynchronize",
              "hipEventSynchronize", "hipMemcpy", "hipMemcpyWithStream")
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx",
                "hipLaunchKernel", "hipExtModuleLaunchKernel", "hipModuleLaunchKernel",
                "cudaLaunchCooperativeKernel")


@dataclass
class IdleBlocks:
    """The idle blocks of one rank, summed over its iterations."""

    rank: int
    iterations: list[tuple[str, int, int]]
    """(label, start_ns, end_ns) of each iteration measured."""
    source: str
    """steps | dataloader | optimizer: where the iterations come from."""
    in_trace: int = 0
    """Iterations the trace holds (the first, left out, included)."""
    trace_idle_share: float | None = None
    """Without steps: the share of the whole trace (first to last device activity) in which
    the GPU ran nothing, the left-out first iteration included."""
    idle_ns: int = 0
    by_class: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    host_ops: dict[str, int] = field(default_factory=dict)
    """ns of ``host`` time per outermost host op name."""
    largest: list[tuple[str, int, int]] = field(default_factory=list)
    """Per iteration: (label, offset of its largest block from the iteration start, length)."""

    @property
    def per_iteration_ns(self) -> float:
        return self.idle_ns / max(len(self.iterations), 1)

    @property
    def iteration_ns(self) -> float:
        return sum(e - s for _, s, e in self.iterations) / max(len(self.iterations), 1)


def iterations(con, rank: int) -> tuple[list[tuple[str, int, int]], str]:
    """The iterations of a rank and where they come from (see the module doc)."""
    rows = _measured_steps(con).get(rank)
    if rows:  # one step is no pattern "each step": nothing to measure
        return [(f"step {s}", int(a), int(b)) for s, a, b in rows
                ] if len(rows) >= 2 else [], "steps"
    cuts = [int(t) for (t,) in con.execute("""
        WITH d AS (SELECT thread, start_ns FROM ops
                   WHERE rank = ? AND phase = 'data' AND name LIKE 'enumerate(DataLoader)%'),
             t AS (SELECT thread FROM d GROUP BY thread ORDER BY count(*) DESC LIMIT 1)
        SELECT start_ns FROM d WHERE thread = (SELECT thread FROM t) ORDER BY start_ns""",
                                        [rank]).fetchall()]
    source = "dataloader"
    if len(cuts) < 3:
        cuts = [int(t) for (t,) in con.execute("""
            SELECT start_ns + dur_ns FROM ops WHERE rank = ? AND name LIKE 'Optimizer.step#%'
            ORDER BY start_ns""", [rank]).fetchall()]
        source = "optimizer"
    spans = [(f"iteration {i + 1}", a, b) for i, (a, b) in enumerate(itertools.pairwise(cuts))]
    if len(spans) >= 3:
        spans = spans[1:]  # one-time work (autotuning, allocator growth) fills the first
    return (spans, source) if len(spans) >= 2 else ([], source)


def _measured_steps(con) -> dict[int, list[tuple[int, int, int]]]:
    """(step, start_ns, end_ns) of the measured steps of every rank (profiled, not disturbed
    by dsprof, holding kernels), in start order: one query for all ranks, once per
    connection; empty without a steps table."""
    try:
        cached = _STEPS.get(con)
    except TypeError:  # a connection that cannot be weakly referenced: no cache
        cached = None
    if cached is not None:
        return cached
    tables = {t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables").fetchall()}
    cached = {}
    if "steps" in tables:
        for rank, step, a, b in con.execute("""
                SELECT rank, step, start_ns, end_ns FROM steps s
                WHERE profiled AND coalesce(disturbed_by, 'window') = 'window'
                  AND EXISTS (SELECT 1 FROM kernels k WHERE k.rank = s.rank AND k.step = s.step)
                ORDER BY rank, start_ns""").fetchall():
            cached.setdefault(int(rank), []).append((step, a, b))
    with contextlib.suppress(TypeError):
        _STEPS[con] = cached
    return cached


_STEPS: weakref.WeakKeyDictionary[Any, dict[int, list[tuple[int, int, int]]]] = (
    weakref.WeakKeyDictionary())


def _merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of intervals, sorted and disjoint."""
    if not len(starts):
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], np.maximum.accumulate(ends[order])
    new = np.ones(len(s), bool)
    new[1:] = s[1:] > e[:-1]
    idx = np.flatnonzero(new)
    return s[idx], np.append(e[idx[1:] - 1], e[-1])


def _covered(starts: np.ndarray, ends: np.ndarray, a: int, b: int) -> int:
    """Length of the union of intervals inside [a, b)."""
    s, e = np.clip(starts, a, b), np.clip(ends, a, b)
    keep = e > s
    if not keep.any():
        return 0
    ms, me = _merge(s[keep], e[keep])
    return int((me - ms).sum())


def idle_blocks(con, rank: int, min_block_ns: int = MIN_BLOCK_NS) -> IdleBlocks | None:
    """The whole-GPU idle blocks of a rank's iterations with their attribution, or None when
    the rank has no iterations to measure."""
    spans, source = iterations(con, rank)
    if not spans:
        return None
    lo, hi = spans[0][1], spans[-1][2]
    # every device activity of the rank, read once: the busy union of the iterations, the
    # whole trace's idle share and the next activity after each sync all come from it
    dev = con.execute("SELECT start_ns, dur_ns FROM kernels WHERE rank = ? AND kind <> 'sync'",
                      [rank]).fetchnumpy()
    dev_s = np.asarray(dev["start_ns"], np.int64)
    dev_d = np.asarray(dev["dur_ns"], np.int64)
    dev_e = dev_s + np.maximum(dev_d, 0)
    window = (dev_s < hi) & (dev_s + dev_d > lo)
    bs, be = _merge(dev_s[window], dev_e[window])
    trace_idle = None
    if source != "steps":
        ws, we = _merge(dev_s, dev_e)
        trace_idle = 1 - float((we - ws).sum()) / max(int(we[-1] - ws[0]), 1)
    blocks = []
    for label, a, b in spans:
        # the gaps of the busy union inside [a, b)
        inside = (be > a) & (bs < b)
        s, e = np.clip(bs[inside], a, b), np.clip(be[inside], a, b)
        gap_s = np.concatenate([[a], e])
        gap_e = np.concatenate([s, [b]])
        keep = gap_e - gap_s >= min_block_ns
        blocks.extend((label, a, int(x), int(y)) for x, y in zip(gap_s[keep], gap_e[keep]))
    out = IdleBlocks(rank, spans, source,
                     len(spans) if source == "steps" else len(spans) + (len(spans) >= 2),
                     trace_idle)
    if not blocks:
        return out
    host = _host_intervals(con, rank, [(a, b) for _, _, a, b in blocks], np.sort(dev_s))
    # the spans of each class together with those of every class before it, merged once
    upto_class = [_merge(np.concatenate([host[c][0] for c in CLASSES[: i + 1]]),
                         np.concatenate([host[c][1] for c in CLASSES[: i + 1]]))
                  for i in range(len(CLASSES) - 1)]
    largest: dict[str, tuple[int, int]] = {}
    for label, it_start, a, b in blocks:
        out.idle_ns += b - a
        if b - a > largest.get(label, (0, 0))[1]:
            largest[label] = (a - it_start, b - a)
        done = 0
        for cls, (starts, ends) in zip(CLASSES[:-1], upto_class):
            upto = _covered(starts, ends, a, b)
            out.by_class[cls] += upto - done
            done = upto
        out.by_class["unexplained"] += (b - a) - done
        hs, he, names = host["host"]
        for j in np.flatnonzero((he > a) & (hs < b) & (names != "")):
            ns = int(min(he[j], b) - max(hs[j], a))
            out.host_ops[str(names[j])] = out.host_ops.get(str(names[j]), 0) + ns
    out.largest = [(label, *largest[label]) for label, _, _ in spans if label in largest]
    return out


def _host_intervals(con, rank: int, blocks: list[tuple[int, int]],
                    device_starts: np.ndarray) -> dict[str, tuple]:
    """(starts, ends, outermost names) of each attribution class on a rank (``device_starts``:
    the sorted starts of its device activity). Ops are those that overlap a block, in start
    order. A sync that ended before a block still reaches into it through its after-sync
    stretch, so syncs are taken whole."""
    launches = ", ".join(f"'{n}'" for n in LAUNCH_CALLS)
    # the blocks' union (sorted, disjoint): an op overlaps a block exactly when it overlaps
    # the last piece of the union that starts before the op ends (ASOF JOIN), so only the ops
    # inside idle time leave DuckDB
    ua, ue = _merge(np.array([a for a, _ in blocks], np.int64),
                    np.array([b for _, b in blocks], np.int64))
    values = ", ".join(f"({int(a)}, {int(b)})" for a, b in zip(ua, ue))
    # one scan of the rank's ops: a row may belong to several classes (a DataLoader op is
    # also a host op)
    ops = con.execute(f"""
        WITH b(a, e) AS (VALUES {values}),
        o AS (
            SELECT o.id, o.parent_id, o.name, o.cat, o.phase, o.start_ns,
                   o.start_ns + o.dur_ns AS end_ns
            FROM ops o
            WHERE o.rank = ? AND o.start_ns < ? AND o.start_ns + o.dur_ns > ?
              AND (o.phase = 'data' OR o.name IN ({launches}) OR o.cat IN ('cpu_op',
                   'user_annotation', 'python_function', 'module'))),
        inside AS (SELECT o.* FROM o ASOF JOIN b ON o.end_ns > b.a WHERE b.e > o.start_ns)
        SELECT o.start_ns, o.end_ns,
               coalesce(o.phase = 'data', false) AS is_data,
               coalesce(o.name IN ({launches}), false) AS is_launch,
               coalesce(o.cat IN ('cpu_op', 'user_annotation', 'python_function', 'module')
                        AND o.name NOT LIKE 'ProfilerStep#%', false) AS is_host,
               CASE WHEN o.cat = 'cpu_op' AND (p.name IS NULL OR p.cat = 'user_annotation')
                    THEN o.name ELSE '' END AS name
        FROM inside o LEFT JOIN (SELECT id, name, cat FROM ops WHERE rank = ?) p
             ON p.id = o.parent_id
        ORDER BY o.start_ns, o.id""",
                      [rank, int(ue[-1]), int(ua[0]), rank]).fetchnumpy()
    sync_s, sync_e = _syncs(con).get(rank, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
    # after a sync: until the first device activity that starts at or after its end (none:
    # an empty stretch)
    nxt = np.searchsorted(device_starts, sync_e, side="left")
    after_e = np.where(nxt < len(device_starts),
                       device_starts[np.minimum(nxt, len(device_starts) - 1)]
                       if len(device_starts) else sync_e, sync_e)
    no_names = np.full(len(sync_s), "", object)
    out: dict[str, tuple] = {"sync": (sync_s, sync_e, no_names),
                             "after_sync": (sync_e.copy(), after_e.astype(np.int64), no_names)}
    for c in ("data", "launch", "host"):
        sel = np.asarray(ops[f"is_{c}"], bool)
        out[c] = (np.asarray(ops["start_ns"][sel], np.int64),
                  np.asarray(ops["end_ns"][sel], np.int64),
                  np.asarray(ops["name"][sel], object) if c == "host"
                  else np.full(int(sel.sum()), "", object))
    return out


def _syncs(con) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """(starts, ends) of the blocking calls of every rank: the sync calls, and the async
    copies whose kernel is a device-to-host copy (pageable memory makes them block). One
    query for all ranks, once per connection (a run's views do not change while it is open):
    ``idle_blocks`` runs per rank, and the lookup of each copy's kernel was the larger part of
    its per-rank cost."""
    try:
        cached = _SYNCS.get(con)
    except TypeError:  # a connection that cannot be weakly referenced: no cache
        cached = None
    if cached is not None:
        return cached
    syncs = ", ".join(f"'{n}'" for n in SYNC_CALLS)
    rows = con.execute(f"""
        SELECT rank, start_ns, start_ns + dur_ns AS end_ns FROM ops o
        WHERE name IN ({syncs}) OR (name IN ('cudaMemcpyAsync', 'hipMemcpyAsync')
            AND EXISTS (SELECT 1 FROM kernels k WHERE k.rank = o.rank
                        AND k.launch_id = o.id AND k.name LIKE '%DtoH%'))""").fetchnumpy()
    rank = np.asarray(rows["rank"], np.int64)
    starts = np.asarray(rows["start_ns"], np.int64)
    ends = np.asarray(rows["end_ns"], np.int64)
    cached = {int(r): (starts[rank == r], ends[rank == r]) for r in np.unique(rank)}
    with contextlib.suppress(TypeError):
        _SYNCS[con] = cached
    return cached


_SYNCS: weakref.WeakKeyDictionary[Any, dict[int, tuple[np.ndarray, np.ndarray]]] = (
    weakref.WeakKeyDictionary())
