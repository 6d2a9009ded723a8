"""Issue 19, "silence where it matters": the findings that were missing on real GPU traces.
Each finding's evidence is re-derived here from the raw trace JSON (a reader written here, not
dsprof's parser); each stays silent on the traces without its pattern and on a CPU run."""

from __future__ import annotations

import gzip
import itertools
import json
import statistics
from functools import cache

import pytest
import torch

import dsprof
from dsprof.analyzers.registry import analyze
from dsprof.ingest.importer import import_traces
from dsprof.run import load
from tests.conftest import trace_dir

DEVICE_CATS = {"kernel", "Kernel", "gpu_memcpy", "Memcpy", "gpu_memset", "Memset"}
AUTOGRAD = ("kineto_resnet50_v100_autograd", "worker0.pt.trace.json.gz")
MEM = ("kineto_resnet50_v100_mem", "worker0.1623143089861.pt.trace.json.gz")
SAMPLED = ("hta_sampled_2rank_nccl", "sampled_rank-0.json.gz")
A100 = ("hta_a100_2rank_nccl_r0", "nccl_data.json.gz")


@cache
def raw(folder: str, name: str) -> list[dict]:
    with gzip.open(trace_dir(folder) / name, "rt") as fh:
        return json.load(fh)["traceEvents"]


@cache
def analysis(folder: str, name: str, tmp: str):
    run_dir, _ = import_traces([trace_dir(folder) / name], f"{tmp}/{folder}")
    with load(run_dir.path) as run:
        return analyze(run, write=False), dict(run.meta)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("silence"))
    return lambda folder, name: analysis(folder, name, base)


def union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def overlap(a: float, b: float, spans: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, y) - max(a, x)) for x, y in spans)


# -- a whole-GPU idle block each step ---------------------------------------------------------

def test_single_process_loader_idle_block_is_rederived_from_the_autograd_trace(imported):
    # GIVEN the raw trace: iterations from one DataLoader fetch to the next (the first left
    # out), device activity of every stream merged, idle stretches of >= 1 ms inside each
    events = [e for e in raw(*AUTOGRAD) if e.get("ph") == "X"]
    fetches = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
                     if str(e["name"]).startswith("enumerate(DataLoader)"))
    busy = union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
                  if e.get("cat") in DEVICE_CATS])
    iters = [(a[0], b[0]) for a, b in itertools.pairwise(fetches)][1:]
    idle = data = 0.0
    for a, b in iters:
        edges = [a] + [x for s, e in busy if e > a and s < b for x in (max(s, a), min(e, b))] + [b]
        for x, y in zip(edges[::2], edges[1::2]):
            if y - x >= 1000:
                idle += y - x
                data += overlap(x, y, fetches)
    idle_ms, data_ms = idle / len(iters) / 1e3, data / len(iters) / 1e3
    # WHEN dsprof analyzes the imported trace
    res, _ = imported(*AUTOGRAD)
    found = [f for f in res.findings if f.kind == "gpu.idle_block"]
    # THEN one finding names the single-process input pipeline, with the trace's numbers
    assert len(found) == 1, [f.title for f in res.findings]
    f = found[0]
    assert idle_ms > 0.2 * (sum(b - a for a, b in iters) / len(iters) / 1e3)  # a real block
    assert f.data["idle_ms_per_step"] == pytest.approx(idle_ms, rel=0.01)
    assert f.data["by_class_ms"]["data"] == pytest.approx(data_ms, rel=0.02)
    assert f.data["iterations"] == len(iters) and f.data["source"] == "dataloader"
    assert "DataLoader workers" in f.title and "num_workers" in f.fix
    # AND the whole trace's idle share (81 %, the first iteration's one-time work included)
    whole = 1 - sum(b - a for a, b in busy) / (busy[-1][1] - busy[0][0])
    assert whole > 0.75
    assert f.data["trace_idle_share"] == pytest.approx(whole, abs=0.005)
    assert f"{whole:.0%} of the time" in f.explanation
    # AND it claims no more than the idle time minus what other findings already claim
    assert f.saving_s * 1e3 <= idle_ms - f.data["claimed_elsewhere_ms"] + 1e-6


def test_idle_block_of_the_a100_ddp_trace_is_rederived_and_split_with_the_others(imported):
    # GIVEN the raw trace: per ProfilerStep, stretches of >= 1 ms with no device activity, and
    # how much of them some host span (op, annotation, runtime call) covers
    events = [e for e in raw(*A100) if e.get("ph") == "X"]
    steps = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
                   if str(e["name"]).startswith("ProfilerStep#"))
    busy = union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
                  if e.get("cat") in DEVICE_CATS])
    host = union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
                  if e.get("cat") in ("cpu_op", "user_annotation", "cuda_runtime")
                  and not str(e["name"]).startswith("ProfilerStep#")])
    idle = covered = 0.0
    for a, b in steps:
        edges = [a] + [x for s, e in busy if e > a and s < b for x in (max(s, a), min(e, b))] + [b]
        for x, y in zip(edges[::2], edges[1::2]):
            if y - x >= 1000:
                idle += y - x
                covered += overlap(x, y, host)
    idle_ms, unexplained_ms = idle / len(steps) / 1e3, (idle - covered) / len(steps) / 1e3
    # WHEN dsprof analyzes it
    res, _ = imported(*A100)
    (f,) = [f for f in res.findings if f.kind == "gpu.idle_block"]
    # THEN the idle time and the part no host span explains are the trace's
    assert f.data["idle_ms_per_step"] == pytest.approx(idle_ms, rel=0.01)
    assert f.data["by_class_ms"]["unexplained"] == pytest.approx(unexplained_ms, abs=0.05)
    assert sum(f.data["by_class_ms"].values()) == pytest.approx(idle_ms, rel=0.01)
    # AND the host-sync and launch findings' idle time is not claimed again
    others = sum(x.saving_s for x in res.findings
                 if x.kind.startswith(("host_sync.", "launch.", "input.")))
    assert f.data["claimed_elsewhere_ms"] == pytest.approx(others * 1e3, rel=1e-6)
    assert f.saving_s + others <= idle_ms / 1e3 * (1 + 1e-6)


def test_idle_block_stays_silent_where_another_finding_explains_it(imported):
    # GIVEN the same model with ProfilerSteps: input.dataloader_wait claims the idle time
    res, _ = imported(*MEM)
    kinds = [f.kind for f in res.findings]
    # THEN the wait is named once, by the DataLoader finding, and no idle block is added
    assert "input.dataloader_wait" in kinds and "gpu.idle_block" not in kinds


def test_a_down_sampled_trace_is_marked_and_gets_no_idle_block(imported):
    # GIVEN HTA's sampled rank: its host events are numbered (Ev Idx) with large gaps
    idx = sorted(e["args"]["Ev Idx"] for e in raw(*SAMPLED)
                 if isinstance(e.get("args"), dict) and "Ev Idx" in e["args"])
    kept = len(set(idx)) / (idx[-1] - idx[0] + 1)
    res, meta = imported(*SAMPLED)
    # THEN ingest notes the share of events kept, and the idle analyzer says why it is silent
    assert meta["ingest_notes"]["sampled"]["0"] == pytest.approx(kept, abs=1e-4)
    assert kept < 0.05
    assert "gpu.idle_block" not in [f.kind for f in res.findings]
    assert any(s["analyzer"] == "gpu_idle" and "down-sampled" in s["reason"]
               for s in res.skipped)


def test_a_single_step_micro_benchmark_is_no_idle_pattern(tmp_path):
    # GIVEN HTA's event-sync trace: one 3 ms ProfilerStep, the GPU idle through most of it
    run_dir, _ = import_traces([trace_dir("hta_a100_event_sync") / "event_sync_trace.json.gz"],
                               tmp_path / "run")
    with load(run_dir.path) as run:
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 1
        res = analyze(run, only=("gpu_idle",), write=False)
    # THEN one step is no "each step" pattern: no finding, and the reason is given
    assert not res.findings
    assert any("fewer than two iterations" in s["reason"] for s in res.skipped)


def test_a_complete_trace_is_not_marked_sampled(imported):
    _, meta = imported(*A100)
    assert "sampled" not in (meta.get("ingest_notes") or {})


# -- a blocking copy into pageable memory ------------------------------------------------------

def _readback_trace(path):
    """A GPU process's Kineto trace in which ``loss.item()`` holds the host 5 ms of each 10 ms
    step: the kernels end at 4 ms, the host sits in cudaMemcpyAsync (Device -> Pageable) from 3
    to 8 ms. (No shared trace holds such a copy longer than 0.8 ms and this machine has no GPU,
    so the events are written here, in the layout torch.profiler writes.)"""
    events = []
    for s in range(3):
        t = 1000 + s * 10_000
        events += [
            {"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{s}", "pid": 1,
             "tid": 1, "ts": t, "dur": 10_000},
            {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": t + 100,
             "dur": 200, "args": {"External id": 10 * s + 1}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
             "ts": t + 150, "dur": 50, "args": {"correlation": 10 * s + 1}},
            {"ph": "X", "cat": "kernel", "name": "ampere_sgemm_128x64_nn", "pid": 0, "tid": 7,
             "ts": t + 1500, "dur": 2500,
             "args": {"device": 0, "stream": 7, "correlation": 10 * s + 1}},
            {"ph": "X", "cat": "cpu_op", "name": "aten::item", "pid": 1, "tid": 1,
             "ts": t + 2900, "dur": 5200, "args": {"External id": 10 * s + 2}},
            {"ph": "X", "cat": "cpu_op", "name": "aten::_local_scalar_dense", "pid": 1,
             "tid": 1, "ts": t + 2950, "dur": 5100, "args": {"External id": 10 * s + 3}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaMemcpyAsync", "pid": 1, "tid": 1,
             "ts": t + 3000, "dur": 5000, "args": {"correlation": 10 * s + 2}},
            {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pageable)",
             "pid": 0, "tid": 7, "ts": t + 4000, "dur": 10,
             "args": {"device": 0, "stream": 7, "correlation": 10 * s + 2, "bytes": 4}},
        ]
    path.write_text(json.dumps({"traceEvents": events}))
    return events


def test_blocking_pageable_readback_is_found_with_the_trace_host_time(tmp_path):
    # GIVEN the trace, and from its raw events: host time in the pageable DtoH calls and the
    # whole-device idle time inside them, per step
    events = _readback_trace(tmp_path / "gpu.json")
    steps = [e for e in events if e["name"].startswith("ProfilerStep#")]
    calls = [e for e in events if e["name"] == "cudaMemcpyAsync"]
    busy = union([(e["ts"], e["ts"] + e["dur"]) for e in events
                  if e["cat"] in DEVICE_CATS])
    host_ms = sum(c["dur"] for c in calls) / len(steps) / 1e3
    idle_ms = sum(c["dur"] - overlap(c["ts"], c["ts"] + c["dur"], busy)
                  for c in calls) / len(steps) / 1e3
    # WHEN it is imported and analyzed
    run_dir, _ = import_traces([tmp_path / "gpu.json"], tmp_path / "run")
    with load(run_dir.path) as run:
        res = analyze(run, write=False)
    found = [f for f in res.findings if f.kind == "host_sync.pageable_readback"]
    # THEN the finding holds the host time (half the step) and claims the idle during the
    # copies; the host-sync finding claims only the idle after them, so together they fit
    (f,) = found
    assert f.data["host_ms_per_step"] == pytest.approx(host_ms)
    assert f.data["gpu_idle_during_ms_per_step"] == pytest.approx(idle_ms)
    assert f.saving_s == pytest.approx(idle_ms / 1e3)
    assert "aten::item" in f.title and "50%" in f.title and "pin_memory=True" in f.fix
    step_s = 10e-3
    ranked = [x for x in res.findings if x.severity != "info"]
    assert sum(x.saving_s for x in ranked) <= step_s
    idle_kinds = [x for x in res.findings if x.kind.startswith(("host_sync.", "gpu.", "launch."))]
    assert sum(x.saving_s for x in idle_kinds) <= step_s - 2.5e-3  # at most the idle time


def test_pageable_readback_is_silent_on_the_shared_traces_short_copies(imported):
    # GIVEN HTA's sampled rank: 8 device-to-pageable copies, none near a share of its steps
    calls = {e["args"]["correlation"] for e in raw(*SAMPLED)
             if e.get("name") == "Memcpy DtoH (Device -> Pageable)"}
    host = sum(float(e["dur"]) for e in raw(*SAMPLED) if e.get("cat") == "cuda_runtime"
               and e.get("args", {}).get("correlation") in calls)
    assert calls and host < 2000  # under 2 ms against 600 ms steps
    res, _ = imported(*SAMPLED)
    assert "host_sync.pageable_readback" not in [f.kind for f in res.findings]


# -- reserved memory from [memory] events ------------------------------------------------------

def test_fragmentation_says_why_when_memory_events_carry_no_reserved_total(imported):
    # GIVEN a 2021 trace whose [memory] events carry Bytes only
    mem = [e for e in raw(*MEM) if e.get("name") == "[memory]"]
    assert mem and not any("Total Reserved" in e["args"] for e in mem)
    res, _ = imported(*MEM)
    reasons = [s["reason"] for s in res.skipped if s["analyzer"] == "fragmentation"]
    assert reasons and "Total Reserved" in reasons[0]


def _gpu_memory_trace(path, reserved_mib: int):
    """A Kineto trace of a GPU process as torch.profiler(profile_memory=True) writes it: the
    [memory] instants of a CUDA device carry Total Allocated and Total Reserved. (No shared
    trace has them and this machine has no GPU, so the events are written here.)"""
    mib = 1 << 20
    events = [{"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{s}", "pid": 1,
               "tid": 1, "ts": 1000 + s * 10_000, "dur": 10_000} for s in range(2)]
    events += [{"ph": "X", "cat": "kernel", "name": "ampere_sgemm_128x64_nn", "pid": 0,
                "tid": 7, "ts": 1500 + s * 10_000, "dur": 8000,
                "args": {"device": 0, "stream": 7, "correlation": s + 1}} for s in range(2)]
    alloc = peak = 0
    for i in range(8):
        alloc += (256 if i % 2 == 0 else -128) * mib
        peak = max(peak, alloc)
        events.append({"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1,
                       "ts": 1100 + i * 2000,
                       "args": {"Device Type": 1, "Device Id": 0, "Addr": 1 << 40 | i,
                                "Bytes": (256 if i % 2 == 0 else -128) * mib,
                                "Total Allocated": alloc, "Total Reserved": reserved_mib * mib}})
    path.write_text(json.dumps({"traceEvents": events}))
    return path, peak


@pytest.mark.parametrize(("reserved_mib", "fires"), [(1280, True), (700, False)])
def test_reserved_far_above_allocated_in_memory_events_is_found(tmp_path, reserved_mib, fires):
    # GIVEN a GPU trace whose allocator reserved 1280 MiB while at most 640 MiB was allocated
    trace, peak_alloc = _gpu_memory_trace(tmp_path / "gpu.json", reserved_mib)
    assert peak_alloc == 640 << 20
    run_dir, _ = import_traces([trace], tmp_path / "run")
    with load(run_dir.path) as run:
        res = analyze(run, only=("fragmentation",), write=False)
    found = [f for f in res.findings if f.kind == "memory.fragmentation"]
    if not fires:  # 9 % slack: a cache, not fragmentation
        assert not found and not res.skipped
        return
    # THEN the finding carries the trace's numbers: reserved 2.0x the peak allocated
    (f,) = found
    assert f.data["reserved_peak"] == reserved_mib << 20
    assert f.data["allocated_peak"] == peak_alloc
    assert f.saving_bytes == (reserved_mib << 20) - peak_alloc
    assert "2.0x" in f.title and "expandable_segments" in f.fix


# -- a CPU run -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """A real dsprof run on CPU: a DataLoader with no workers, .item() every step."""
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 32), torch.randn(64, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    path = tmp_path_factory.mktemp("cpu") / "run"
    with dsprof.profile(path, schedule=dsprof.schedule(wait=1, warmup=1, active=3),
                        quiet=True, analyze=False):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            loss.item()
    with load(path) as run:
        return analyze(run, write=False), dict(run.meta), path


NEW_KINDS = ("gpu.idle_block", "memory.fragmentation", "host_sync.pageable_readback",
             "comm.unbucketed")


def test_new_findings_are_silent_on_a_cpu_run(cpu_run):
    res, _, _ = cpu_run
    assert not res.failed, res.failed
    assert not [f.title for f in res.findings if f.kind.startswith(NEW_KINDS)]
    skipped = {s["analyzer"]: s["reason"] for s in res.skipped}
    assert "gpu_idle" in skipped and "fragmentation" in skipped


def test_a_complete_dsprof_window_is_not_marked_sampled(cpu_run):
    # GIVEN dsprof's own window trace: ops, annotations and [memory] instants all numbered
    _, meta, path = cpu_run
    (trace,) = sorted((path / "raw" / "rank0").glob("window-*.trace.json*"))
    idx = [e["args"]["Ev Idx"] for e in json.loads(trace.read_text())["traceEvents"]
           if isinstance(e.get("args"), dict) and "Ev Idx" in e["args"]]
    assert idx and len(set(idx)) == max(idx) - min(idx) + 1
    # THEN ingest does not call it down-sampled
    assert "sampled" not in (meta.get("ingest_notes") or {})


# -- hundreds of small per-parameter all-reduces -------------------------------------------------

def _gloo_loop(path, per_parameter: bool):
    """A real data-parallel loop on gloo (world 1): 40 Linear layers (80 parameters), gradients
    all-reduced one parameter at a time, or once over a flat buffer."""
    from torch._utils import _flatten_dense_tensors

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(40)])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with dsprof.profile(path, schedule=dsprof.schedule(wait=1, warmup=1, active=2),
                        quiet=True, analyze=False):
        for _ in range(5):
            model(torch.randn(8, 16)).sum().backward()
            grads = [p.grad for p in model.parameters()]
            if per_parameter:
                for g in grads:
                    torch.distributed.all_reduce(g)
            else:
                torch.distributed.all_reduce(_flatten_dense_tensors(grads))
            opt.step()
            opt.zero_grad()
    return [p.numel() * p.element_size() for p in model.parameters()]


@pytest.mark.slow
def test_per_parameter_all_reduces_are_found_on_a_real_gloo_run(tmp_path):
    # GIVEN a real gloo process group, and the same loop per parameter and over a flat buffer
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        sizes = _gloo_loop(tmp_path / "per_param", per_parameter=True)
        _gloo_loop(tmp_path / "flat", per_parameter=False)
    finally:
        dist.destroy_process_group()
    # WHEN both runs are analyzed
    found = {}
    for name in ("per_param", "flat"):
        with load(tmp_path / name) as run:
            res = analyze(run, write=False)
        assert not res.failed, res.failed
        found[name] = [f for f in res.findings if f.kind == "comm.unbucketed"]
    # THEN the per-parameter loop is named with its count and median size, from the model
    (f,) = found["per_param"]
    assert f.data["per_step"] == len(sizes) == 80
    assert f.data["median_bytes"] == statistics.median(sizes)
    assert f.data["bytes_per_step"] == sum(sizes)
    assert "80 all-reduces per step" in f.title and "bucket_cap_mb" in f.fix
    # AND the flat buffer (one all-reduce a step) is not
    assert found["flat"] == []


def test_bucketed_all_reduces_of_a_real_nccl_trace_are_not_flagged(imported):
    # GIVEN the A100 DDP trace: few all-reduces per step, each megabytes (DDP's buckets)
    events = raw(*A100)
    kernels = [e for e in events if "AllReduce" in str(e.get("name"))
               and e.get("cat") == "kernel"]
    steps = [e for e in events if str(e.get("name")).startswith("ProfilerStep#")]
    sizes = sorted(e["args"]["In msg nelems"] * 4 for e in kernels)
    assert len(kernels) / len(steps) < 10 and sizes[len(sizes) // 2] > 1 << 20
    res, _ = imported(*A100)
    assert "comm.unbucketed" not in [f.kind for f in res.findings]


# -- idle blocks of a dsprof run: the profiler's own cost is not the program's ------------------

def _recorded_run(window_ms: int):
    """A dsprof run (synthetic tables: no GPU here): 8 steady steps of 20 ms, then two recorded
    steps of ``window_ms`` in which the GPU runs the first and last 5 ms."""
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import MS, SCRIPT, table

    durs = [50, 30] + [20] * 8 + [window_ms, window_ms]
    starts = [sum(durs[:i]) * MS for i in range(len(durs))]
    ops, kernels = [], []
    for s in (10, 11):
        ops.append({"id": s, "step": s, "name": "aten::nonzero_static", "cat": "cpu_op",
                    "thread": 1, "start_ns": starts[s] + 5 * MS,
                    "dur_ns": (window_ms - 10) * MS, "phase": "forward"})
        kernels += [{"step": s, "name": "gemm", "kind": "compute", "category": "gemm",
                     "stream": 7, "start_ns": starts[s] + a * MS, "dur_ns": 5 * MS}
                    for a in (0, window_ms - 5)]
    steps = {"step": list(range(12)), "start_ns": starts,
             "end_ns": [s + d * MS for s, d in zip(starts, durs)],
             "dur_ns": [d * MS for d in durs], "profiled": [False] * 10 + [True] * 2,
             "disturbed_by": ["setup", "first_call"] + [None] * 8 + ["window"] * 2}
    return Run.from_tables(meta={**SCRIPT, "source": "run"}, steps=steps, ops=table(*ops),
                           kernels=table(*kernels))


@pytest.mark.parametrize("window_ms", [20, 30])
def test_the_profilers_own_cost_is_not_claimed_as_idle_time(window_ms):
    # GIVEN recorded steps 0 or 10 ms longer than the steady ones, the GPU idle in between
    res = analyze(_recorded_run(window_ms), only=("gpu_idle",), write=False)
    (f,) = res.findings
    idle_ms = window_ms - 10
    # THEN the part by which recording slowed the step is taken off the claim
    assert f.data["idle_ms_per_step"] == pytest.approx(idle_ms)
    assert f.data["recording_cost_ms"] == pytest.approx(window_ms - 20)
    assert f.saving_s * 1e3 == pytest.approx(idle_ms - (window_ms - 20))


def test_idle_time_that_no_host_span_explains_is_called_unexplained():
    # GIVEN steps of 20 ms whose GPU idles 5-15 ms while the trace records nothing on the host
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import MS, steps, table

    run = Run.from_tables(
        steps=steps([20, 20, 20]),
        ops=table(*({"id": s, "step": s, "name": "aten::mm", "cat": "cpu_op", "thread": 1,
                     "start_ns": 20 * s * MS, "dur_ns": MS, "phase": "forward"}
                    for s in (1, 2))),
        kernels=table(*({"step": s, "name": "gemm", "kind": "compute", "category": "gemm",
                         "stream": 7, "start_ns": (20 * s + a) * MS, "dur_ns": 5 * MS}
                        for s in (1, 2) for a in (0, 15))))
    (f,) = analyze(run, only=("gpu_idle",), write=False).findings
    # THEN it says so, with where the block sits in the step
    assert f.title == ("Unexplained GPU idle 10.0 ms/step (50% of the step), the largest "
                       "block 5.0-15.0 ms into the 20 ms step")
    assert f.data["by_class_ms"]["unexplained"] == pytest.approx(10.0)
    assert "with_stack=True" in f.fix



def test_ddp_with_tiny_buckets_is_told_to_raise_bucket_cap_mb():
    # GIVEN 200 small all-reduces a step issued by DDP (its forward span is in the trace)
    from tests.unit.test_analyzers_synthetic import _per_param

    (f,) = analyze(_per_param(200, 4096, ddp=True), only=("unbucketed_allreduce",),
                   write=False).findings
    # THEN the advice is DDP's own switch, not a hand-written flat buffer
    assert f.title.startswith("Raise DistributedDataParallel's bucket_cap_mb: 200 all-reduces")
    assert "_flatten_dense_tensors" not in f.fix and "bucket_cap_mb=25" in f.fix
