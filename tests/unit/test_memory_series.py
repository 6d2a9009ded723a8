"""memory_series over arrays gives the rows of the former per-event loop (kept here as the
oracle), on real traces and on hand-made rows with categories, seeds and several devices."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from dsprof.collectors.memory_census import CATEGORIES
from dsprof.ingest.memory_tables import MAX_POINTS, _keep, series


def _oracle(cols: Mapping[str, list[Any]], rank: int) -> dict[str, list[Any]]:
    """The per-event loop series() replaced."""
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
        ts = [cols["ts_ns"][j] for j in rows]
        m = len(ts)
        keep = ([k for k in range(m) if k == m - 1 or ts[k + 1] != ts[k]] if m <= MAX_POINTS
                else _keep(points[:, -1], ts))
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


def _rows(n: int, seed: int) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    cats = [*CATEGORIES, None, "unknown-kind"]
    cols: dict[str, list[Any]] = {k: [] for k in ("ts_ns", "action", "device", "category",
                                                  "bytes", "allocated", "step", "capture")}
    total = 0
    for i in range(n):
        b = rng.choice([1, -1]) * rng.randrange(1, 1 << 20)
        total += b
        cols["ts_ns"].append(None if i < 5 else 1000 + i // 3)  # seeds, then ties in time
        cols["action"].append(rng.choice(["alloc", "free", "alloc", "segment_alloc"]))
        cols["device"].append(rng.choice(["cpu", "cuda:0", "cuda:1"]))
        cols["category"].append(rng.choice(cats))
        cols["bytes"].append(b)
        cols["allocated"].append(None if rng.random() < 0.1 else total)
        cols["step"].append(i // 100)
        cols["capture"].append(0)
    return cols


def test_series_matches_the_loop_on_hand_made_rows():
    for n in (0, 7, 300, 3 * MAX_POINTS):  # the last one is downsampled into buckets
        cols = _rows(n, seed=n)
        got = series(cols, rank=2)
        assert got == _oracle(cols, rank=2)
        if n > MAX_POINTS:
            assert 0 < len(got["ts_ns"]) < n
        # the categories and other add up to the total at every point
        if got["total"]:
            parts = np.array([got[c] for c in CATEGORIES]).sum(axis=0)
            assert parts.tolist() == got["total"]


def test_series_matches_the_loop_on_real_traces():
    from dsprof.ingest import device_ops
    from dsprof.ingest.events import split
    from dsprof.ingest.host_ops import build_host_ops
    from dsprof.ingest.memory_window import attribute
    from dsprof.ingest.trace_file import load
    from tests.conftest import trace_dir

    path = min(trace_dir("kineto_resnet50_v100_mem").glob("*.json.gz"))
    doc = load(path)
    parsed = split(doc.events)
    ops = build_host_ops(parsed.host, base_ns=doc.base_ns, rank=0, first_id=0)
    mem = device_ops.build_memory(parsed.memory, ops, base_ns=doc.base_ns, rank=0)
    cols = attribute(mem, {}, None, rank=0)
    got = series(cols, rank=0)
    assert len(got["ts_ns"]) > 1000
    assert got == _oracle(cols, rank=0)


def test_keep_takes_the_last_state_of_each_instant():
    assert _keep(np.array([1, 2, 3, 4]), [10, 10, 11, 12]) == [1, 2, 3]
