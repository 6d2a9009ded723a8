"""Each finding made on a trace in ../shared/traces, its evidence and saving re-derived from the
raw trace JSON (a reader written here, not dsprof's parser). A finding kind that fires on a
shared trace with no re-derivation here or in the tests named in ``REDERIVED`` fails
``test_every_finding_kind_on_the_shared_traces_is_rederived``."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path

import pytest

from tests.unit.shared_traces import NAMES, analysis, covered, events, union

KERNEL_CATS = {"kernel", "Kernel"}
DEVICE_CATS = KERNEL_CATS | {"gpu_memcpy", "gpu_memset", "Memcpy", "Memset"}
RUNTIME_CATS = {"cuda_runtime", "Runtime", "cuda_driver"}
HOST_CATS = {"cpu_op", "Operator", "user_annotation"}
STEP = re.compile(r"^ProfilerStep#(\d+)$")

# kind -> where its evidence is re-derived from the raw trace
REDERIVED = {
    "gpu.idle_block": "test_silence_findings.py (idle blocks and their host split)",
    "precision.fp32_matmul": "test_precision_evidence.py (fp32/low matrix and kernel time)",
    "launch.bound": "here (host-bound idle, launch API time, share); test_claimed_time.py",
    "host_sync.trace": "here (idle gap after each sync, each gap once)",
    "input.dataloader_wait": "here (fetch time, GPU idle inside it, with or without steps)",
    "input.pageable_copy": "here",
    "comm.bound": "here; test_trace_advice.py (bf16 on all-reduce time only)",
    "fusion.conv_bn": "here",
    "fusion.optimizer": "here",
    "steps.noise": "here",
    "steps.outliers": "here",
}


def step_spans(name: str) -> dict[int, tuple[float, float]]:
    """ProfilerStep number -> (start, end) in us."""
    out = {}
    for e in events(name):
        m = STEP.match(str(e.get("name", "")))
        if m and e.get("cat") in HOST_CATS:
            out[int(m.group(1))] = (float(e["ts"]), float(e["ts"]) + float(e["dur"]))
    return out


def children(name: str) -> dict[int, list[dict]]:
    """id(host event) -> its direct host children (same thread, nested in time)."""
    out: dict[int, list[dict]] = {}
    by_tid: dict[object, list[dict]] = {}
    for e in events(name):
        if e.get("cat") in HOST_CATS:
            by_tid.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    for evs in by_tid.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[dict] = []
        for e in evs:
            start = float(e["ts"])
            while stack and start >= float(stack[-1]["ts"]) + float(stack[-1]["dur"]):
                stack.pop()
            out.setdefault(id(stack[-1]) if stack else 0, []).append(e)
            stack.append(e)
    return out


def findings(kind: str) -> list[tuple[str, object]]:
    return [(n, f) for n in NAMES for f in analysis(n)[0].findings if f.kind == kind]


pytestmark = pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")


def test_every_finding_kind_on_the_shared_traces_is_rederived():
    kinds = {f.kind for n in NAMES for f in analysis(n)[0].findings}
    assert kinds <= set(REDERIVED), sorted(kinds - set(REDERIVED))
    # and the tests named there exist, with a test of that kind in them
    here = Path(__file__).parent
    for kind, where in REDERIVED.items():
        for ref in re.findall(r"(test_\w+\.py)", where):
            assert kind in (here / ref).read_text(), (kind, ref)


def test_pageable_copies_are_the_raw_copies_and_their_launch_time():
    found = findings("input.pageable_copy")
    assert found
    for name, f in found:
        copies = [e for e in events(name) if e.get("cat") in DEVICE_CATS
                  and "HtoD" in str(e["name"]) and "Pageable" in str(e["name"])]
        if name == "hta_sampled_2rank_nccl" and f.evidence[0].rank != 0:
            continue  # one finding per rank; the raw file read here is rank 0's
        corr = {e.get("args", {}).get("correlation") for e in copies} - {None}
        host_us = sum(float(e["dur"]) for e in events(name) if e.get("cat") in RUNTIME_CATS
                      and e.get("args", {}).get("correlation") in corr)
        steps = step_spans(name)
        in_steps = {s for s, (a, b) in steps.items() for e in copies if a <= float(e["ts"]) < b}
        assert f.evidence[0].text.endswith(f"x {len(copies)}"), (name, f.evidence[0].text)
        assert f.saving_s == pytest.approx(host_us / max(len(in_steps), 1) / 1e6, rel=0.02), name


def test_communication_bound_evidence_is_the_raw_communication_of_its_step():
    found = findings("comm.bound")
    assert found
    for name, f in found:
        ev = f.evidence[0]
        if name == "hta_sampled_2rank_nccl" and ev.rank != 0:
            continue  # the raw file read here is rank 0's
        a, b = step_spans(name)[ev.step]
        comm = union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events(name)
                      if (e.get("cat") in DEVICE_CATS and "nccl" in str(e["name"]).lower())
                      or str(e["name"]).startswith("gloo:")])
        comm_ms = covered(a, b, comm) / 1e3
        said = re.search(r"([\d.]+) ms communication, ([\d.]+) ms exposed", ev.text)
        assert said, ev.text
        assert float(said.group(1)) == pytest.approx(comm_ms, rel=0.02, abs=0.1), (name, comm_ms)
        assert float(said.group(2)) <= float(said.group(1)) + 0.05
        # compression halves transfer at most: never more than half the exposed time
        assert f.saving_s <= 0.5 * float(said.group(2)) / 1e3 * 1.001


def test_optimizer_evidence_counts_the_raw_ops_under_its_step_span():
    found = findings("fusion.optimizer")
    assert found
    for name, f in found:
        kids = children(name)
        spans = [e for e in events(name) if str(e["name"]).startswith("Optimizer.step#")
                 and e.get("cat") in HOST_CATS]
        counts = [sum(1 for c in kids.get(id(s), []) if c.get("cat") in ("cpu_op", "Operator"))
                  for s in spans]
        assert counts
        n_ops = int(re.search(r": (\d+) ops", f.evidence[0].text).group(1))
        assert n_ops == pytest.approx(statistics.mean(counts), rel=0.02), (name, counts)


def test_conv_bn_chains_are_the_raw_forward_sequences():
    found = findings("fusion.conv_bn")
    assert found
    for name, f in found:
        ops = [f"aten::{o}" for o in f.data["ops"]]
        kids = children(name)
        steps = step_spans(name)
        per_step = []
        for a, b in steps.values():
            # top-level forward ops of the main thread (no host op above them but the step)
            step_ev = next(e for e in events(name) if STEP.match(str(e.get("name", "")))
                           and float(e["ts"]) == a)
            seq = [str(c["name"]) for c in kids.get(id(step_ev), [])]
            seq += [str(g["name"]) for c in kids.get(id(step_ev), [])
                    if c.get("cat") == "user_annotation" for g in kids.get(id(c), [])]
            per_step.append(sum(seq[i:i + len(ops)] == ops for i in range(len(seq))))
        # THEN the chain occurs as often as the finding says, in the steps that have it
        assert f.data["instances_per_step"] == pytest.approx(
            statistics.median(per_step), rel=0.05), (name, ops, Counter(per_step))


@pytest.mark.parametrize("kind", ["steps.noise", "steps.outliers"])
def test_outlier_steps_are_the_raw_steps_over_the_limit(kind):
    for name, f in findings(kind):
        steps = step_spans(name)
        limit_ms = f.data["limit_ms"]
        flagged = set(f.data["steps"])
        assert flagged
        for s in flagged:
            a, b = steps[s]
            assert (b - a) / 1e3 > limit_ms, (name, s)
        assert f.data["median_ms"] == pytest.approx(
            statistics.median((b - a) / 1e3 for a, b in steps.values()), rel=0.05)


def test_host_sync_idle_is_each_gap_after_a_sync_once():
    # the idle after each blocking call of a step, to the next device activity in the step,
    # with gaps that several syncs share counted once (test_trace_advice.py: the A100 case)
    syncs = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
             "cudaMemcpy", "hipStreamSynchronize", "hipDeviceSynchronize",
             "hipEventSynchronize", "hipMemcpy", "hipMemcpyWithStream"}
    by_set: dict[str, float] = {}
    for name, f in findings("host_sync.trace"):
        by_set[name] = by_set.get(name, 0.0) + f.saving_s
    assert by_set
    for name, charged in by_set.items():
        steps = list(step_spans(name).values())
        kernels = sorted(float(e["ts"]) for e in events(name) if e.get("cat") in DEVICE_CATS)
        dtoh = {e.get("args", {}).get("correlation") for e in events(name)
                if e.get("cat") in DEVICE_CATS and "DtoH" in str(e["name"])} - {None}
        gaps: dict[float, float] = {}
        for e in events(name):
            if e.get("cat") not in RUNTIME_CATS:
                continue
            if not (e["name"] in syncs or (e["name"] in ("cudaMemcpyAsync", "hipMemcpyAsync")
                                           and e.get("args", {}).get("correlation") in dtoh)):
                continue
            step = next(((a, b) for a, b in steps if a <= float(e["ts"]) < b), None)
            if step is None:
                continue
            end = float(e["ts"]) + float(e["dur"])
            nxt = next((k for k in kernels if k >= end), None)
            if nxt is None or nxt >= step[1]:
                continue
            gaps[nxt] = max(gaps.get(nxt, 0.0), nxt - end)
        union_s = sum(gaps.values()) / len(steps) / 1e6
        assert charged == pytest.approx(union_s, rel=0.03, abs=2e-6), (name, charged, union_s)


LAUNCH_API = {"cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx",
              "hipLaunchKernel", "hipExtModuleLaunchKernel", "hipModuleLaunchKernel",
              "cudaLaunchCooperativeKernel"}


def step_of(name: str):
    """The number of the ProfilerStep span holding a time (us), or None. A step number may
    hold two spans in an odd trace (the MI250 one): both are that step."""
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"]), int(m.group(1)))
                   for e in events(name) if (m := STEP.match(str(e.get("name", ""))))
                   and e.get("cat") in HOST_CATS)

    def find(ts: float):
        return next((n for a, b, n in spans if a <= ts < b), None)

    return find, spans


def test_launch_bound_is_the_raw_host_bound_idle_and_launch_time():
    found = findings("launch.bound")
    assert found
    for name, f in found:
        evs = events(name)
        find, spans = step_of(name)
        # every device activity of the rank, in start order, with its launch's start
        launch = {e["args"]["correlation"]: float(e["ts"]) for e in evs
                  if e.get("cat") in RUNTIME_CATS and "correlation" in e.get("args", {})}
        device = sorted((float(e["ts"]), float(e["ts"]) + max(float(e["dur"]), 0.0),
                         launch.get(e.get("args", {}).get("correlation")))
                        for e in evs if e.get("cat") in DEVICE_CATS)
        # a gap is host-bound when the activity ending it was launched after the gap began
        host: dict[int, float] = {}
        busy_until = None
        for start, end, launched in device:
            if busy_until is not None and start > busy_until and launched is not None \
                    and launched > busy_until and (step := find(launched)) is not None:
                host[step] = host.get(step, 0.0) + start - busy_until
            busy_until = end if busy_until is None else max(busy_until, end)
        per_step_ms = sum(host.values()) / len(host) / 1e3
        api_ms = sum(float(e["dur"]) for e in evs if e.get("cat") in RUNTIME_CATS
                     and e["name"] in LAUNCH_API and find(float(e["ts"])) in host) / len(host) / 1e3
        step_ms = sum(b - a for a, b, n in spans if n in host) / len(host) / 1e3
        # THEN the idle, the launch API time and the share are the raw trace's
        assert f.data["host_bound_ms_per_step"] == pytest.approx(per_step_ms, rel=0.01), name
        assert f.data["launch_api_ms_per_step"] == pytest.approx(api_ms, rel=0.01), name
        assert f.data["share"] == pytest.approx(min(per_step_ms / step_ms, 1.0), rel=0.01), name
        # the saving is what a CUDA graph removes: launch time, at most the idle time
        assert f.saving_s * 1e3 <= min(per_step_ms, api_ms) * 1.001
        worst = max(host, key=host.get)
        assert f.evidence[0].step == worst
        assert f.evidence[0].text.startswith(f"step {worst}: {host[worst] / 1e3:.2f} ms "), name


def test_dataloader_waits_are_the_raw_batch_fetches_and_the_gpu_idle_inside_them():
    found = findings("input.dataloader_wait")
    assert found
    for name, f in found:
        evs = events(name)
        find, spans = step_of(name)
        fetches = [e for e in evs if str(e["name"]).startswith("enumerate(DataLoader)#")
                   and str(e["name"]).endswith("__next__") and e.get("cat") in HOST_CATS
                   and (not spans or find(float(e["ts"])) is not None)]
        n_steps = len({find(float(e["ts"])) for e in fetches}) if spans else 0
        busy = union([(float(e["ts"]), float(e["ts"]) + max(float(e["dur"]), 0.0))
                      for e in evs if e.get("cat") in DEVICE_CATS])
        wait_us = sum(float(e["dur"]) for e in fetches)
        idle_us = sum(float(e["dur"]) - covered(float(e["ts"]), float(e["ts"]) + float(e["dur"]),
                                                busy) for e in fetches)
        per = max(n_steps, 1)
        # THEN the wait and the GPU idle inside it are the raw fetches' (per step, or over the
        # whole capture of a trace without steps), and the saving is that idle time per step
        assert f.data["fetches"] == len(fetches), name
        assert f.data["wait_ms_per_step"] == pytest.approx(wait_us / per / 1e3, rel=0.01), name
        assert f.data["gpu_idle_ms_per_step"] == pytest.approx(idle_us / per / 1e3, rel=0.01)
        if n_steps:
            assert f.saving_s == pytest.approx(idle_us / per / 1e6, rel=0.01), name
        else:
            assert f.saving_s == 0 and f.severity == "info", name


def test_idle_blocks_fire_only_where_test_silence_findings_rederives_them():
    # test_silence_findings.py re-derives the idle block of these two traces from the raw JSON;
    # a trace where one newly fires needs its own re-derivation there
    assert sorted(n for n, _ in findings("gpu.idle_block")) == [
        "hta_a100_2rank_nccl_r0/nccl_data.json.gz",
        "kineto_resnet50_v100_autograd/worker0.pt.trace.json.gz"]


def test_the_memory_timeline_export_makes_no_finding(tmp_path):
    # GIVEN the one shared file that is not a Chrome trace (export_memory_timeline's raw rows)
    from dsprof.analyzers.registry import ANALYZERS, analyze, load_analyzer
    from dsprof.ingest.importer import import_traces
    from dsprof.run import load
    from tests.conftest import trace_dir

    run_dir, _ = import_traces([trace_dir("hta_memory_timeline")], tmp_path / "run")
    with load(run_dir.path) as run:
        out = analyze(run, write=False)
    # THEN no finding (nothing to re-derive one from), and every analyzer says why it skipped
    assert out.findings == [] and out.failed == []
    assert {s["analyzer"] for s in out.skipped} == {load_analyzer(e).name for e in ANALYZERS}
