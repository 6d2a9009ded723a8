"""The join of a window's allocation events with the memory collector's census
(dsprof.ingest.memory_window.attribute), on small hand-made inputs."""

from __future__ import annotations

from dsprof.ingest.memory_window import attribute, peak_breakdown

KB = 1024


def events(rows):
    """Memory columns as device_ops.build_memory makes them: (ts, addr, bytes, reported, step)."""
    n = len(rows)
    return {"device": ["cpu"] * n, "ts_ns": [r[0] for r in rows], "addr": [r[1] for r in rows],
            "bytes": [r[2] for r in rows], "allocated": [r[3] for r in rows],
            "reserved": [None] * n, "op_id": [None] * n, "step": [r[4] for r in rows],
            "action": ["alloc" if r[2] >= 0 else "free" for r in rows]}


def census(**kw):
    doc = {"start_ns": 100, "end_ns": 1000, "steps": [1, 2], "baseline": [], "boundaries": [],
           "saved": [], "inputs": [], "calls": [], "modules": [], "sites": [], "holders": []}
    doc.update(kw)
    return doc


def test_cpu_total_is_baseline_plus_window_and_ignores_stale_frees():
    # GIVEN 10 KiB of parameters alive at the start, 4 KiB of a tensor alive at the start that
    # dies at t=300, and the profiler's events, including a free of a block it never saw
    # allocated (reported with a stale size) and a "Total Allocated" that is not the live total
    c = census(baseline=[["cpu", 1, 10 * KB, "parameter", "M", None],
                         ["cpu", 2, 4 * KB, "other", "", 300]],
               boundaries=[{"step": 1, "ts_ns": 500, "keys": [["cpu", 20, 2 * KB, "gradient"]]},
                           {"step": 2, "ts_ns": 900, "keys": []}])
    ev = events([(200, 10, 1 * KB, 999, 1), (250, 20, 2 * KB, 999, 1), (260, 77, -8 * KB, 999, 1),
                 (400, 10, -1 * KB, 999, 1), (600, 30, 3 * KB, 999, 2)])
    # WHEN joined
    cols = attribute(ev, {}, c, rank=0)
    rows = list(zip(cols["ts_ns"], cols["action"], cols["bytes"], cols["allocated"],
                    cols["category"], cols["source"]))
    # THEN the live total is recomputed, the stale free is dropped, the dead baseline is freed
    assert rows == [
        (100, "alloc", 10 * KB, 10 * KB, "parameter", "baseline"),
        (100, "alloc", 4 * KB, 14 * KB, "other", "baseline"),
        (200, "alloc", 1 * KB, 15 * KB, "temporary", "profiler"),  # freed inside step 1
        (250, "alloc", 2 * KB, 17 * KB, "gradient", "profiler"),   # .grad at boundary 1
        (300, "free", -4 * KB, 13 * KB, "other", "baseline"),
        (400, "free", -1 * KB, 12 * KB, "temporary", "profiler"),
        (600, "alloc", 3 * KB, 15 * KB, "other", "profiler"),      # survives its step
    ]
    assert cols["free_ns"][2] == 400 and cols["free_ns"][6] is None
    peak, ts, cats = peak_breakdown(cols)["cpu"]
    assert (peak, ts) == (17 * KB, 250)
    assert cats == {"parameter": 10 * KB, "other": 4 * KB, "temporary": KB, "gradient": 2 * KB}


def test_saved_tensors_become_activations_of_the_module_that_made_them():
    # GIVEN two allocations at one address, one after the other: only the second is live when
    # the hook saw a tensor there
    c = census(saved=[[1, "cpu", 10, KB, "Net.block", "Net.block.fc", 0, 450]],
               inputs=[[1, "cpu", 11, KB, 205]], sites=[[0, [["net.py", 7, "forward"]]]])
    ev = events([(200, 10, KB, None, 1), (205, 11, KB, None, 1), (300, 10, -KB, None, 1),
                 (400, 10, KB, None, 1), (700, 10, -KB, None, 2)])
    cols = attribute(ev, {}, c, rank=0, stack_base=5)
    alloc = [(t, cat, mod, sid) for t, a, cat, mod, sid in zip(
        cols["ts_ns"], cols["action"], cols["category"], cols["module"], cols["stack_id"])
        if a == "alloc"]
    assert alloc == [(200, "temporary", None, None), (205, "input", None, None),
                     (400, "activation", "Net.block", 5)]
    # the free row carries its alloc's category and module
    assert cols["category"][-1] == "activation" and cols["module"][-1] == "Net.block"


def test_an_unreported_free_is_inferred_from_address_reuse():
    # GIVEN an alloc at an address that is allocated again with no free in between
    ev = events([(10, 5, KB, 1, None), (20, 5, 2 * KB, 3, None)])
    # WHEN imported (no census: the profiler's totals are kept)
    cols = attribute(ev, {}, None, rank=0)
    # THEN the first block is taken as freed at the reuse, and totals are as reported
    assert cols["free_ns"] == [20, None]
    assert cols["allocated"] == [1, 3]
