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


def _both_paths(monkeypatch, mem, op_module):
    """attribute() over arrays (imported traces) and by its event loop, on the same input."""
    from dsprof.ingest import memory_window

    made = []
    real = memory_window._paired_without_census
    with monkeypatch.context() as m:
        m.setattr(memory_window, "_paired_without_census",
                  lambda *a, **k: made.append(real(*a, **k)) or made[-1])
        fast = attribute(mem, op_module, None, rank=3, capture=2)
    assert made and made[0] is not None  # the array path did the work
    with monkeypatch.context() as m:
        m.setattr(memory_window, "_paired_without_census", lambda *a, **k: None)
        loop = attribute(mem, op_module, None, rank=3, capture=2)
    return fast, loop


def test_pairing_over_arrays_gives_the_event_loops_rows_on_odd_inputs(monkeypatch):
    # GIVEN reuse without a free, a double free, a free of an unknown block, rows without an
    # address, segment rows, two devices sharing an address, and ties in time
    rows = [(10, 5, KB, 1, 0), (20, 5, 2 * KB, 3, 0), (30, 5, -2 * KB, 1, 0),
            (30, 5, -2 * KB, 1, 0), (5, 9, -KB, None, 0), (40, None, KB, None, 1),
            (15, 7, 3 * KB, 4, 1), (15, 7, -3 * KB, 1, 1)]
    ev = events(rows)
    ev["device"] = ["cpu", "cpu", "cpu", "cpu", "cpu", "cpu", "cuda:0", "cuda:0"]
    ev["device"][0] = "cuda:0"
    ev["action"][5] = "segment_alloc"
    ev["op_id"] = [1, 2, 3, None, 4, 1, 2, 5]
    ev["stack_id"] = [11, 12, 13, 14, 15, 16, 17, 18]
    ev["source"] = ["profiler"] * 8
    fast, loop = _both_paths(monkeypatch, ev, {1: "m.a", 2: "m.b", 5: "m.c"})
    # THEN the two are the same rows
    assert fast == loop
    cpu = [(t, f, b) for d, t, f, b in zip(fast["device"], fast["ts_ns"], fast["free_ns"],
                                           fast["bytes"]) if d == "cpu"]
    assert cpu[:4] == [(5, None, -KB), (20, 30, 2 * KB), (30, None, -2 * KB), (30, None, -2 * KB)]


def test_pairing_over_arrays_gives_the_event_loops_rows_on_real_traces(monkeypatch):
    # GIVEN the [memory] events of real ResNet50 traces (12,838 and 10,980 events)
    from dsprof.ingest import device_ops
    from dsprof.ingest.events import split
    from dsprof.ingest.host_ops import build_host_ops
    from dsprof.ingest.trace_file import load
    from tests.conftest import trace_dir

    for path in sorted(trace_dir("kineto_resnet50_v100_mem").glob("*.json.gz")):
        doc = load(path)
        parsed = split(doc.events)
        ops = build_host_ops(parsed.host, base_ns=doc.base_ns, rank=0, first_id=0)
        mem = device_ops.build_memory(parsed.memory, ops, base_ns=doc.base_ns, rank=0)
        ids, mods = ops.columns["id"], ops.columns["module"]
        op_module = {i: m for i, m in zip(list(ids), _as_list(mods)) if m}
        # WHEN attributed both ways THEN the rows are the same
        fast, loop = _both_paths(monkeypatch, mem, op_module)
        assert len(fast["ts_ns"]) > 10_000
        assert fast == loop


def _as_list(values):
    return values.to_pylist() if hasattr(values, "to_pylist") else list(values)
