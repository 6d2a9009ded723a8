"""Imported real traces (../shared/traces) read right: memory shares of a stated total, folders
that are not one job refused, skip reasons that fit the device, per-step and per-window figures
that say which. Each expectation is re-derived from the raw JSON with a reader written here."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
from functools import cache

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.errors import TraceFormatError
from dsprof.ingest.importer import import_traces
from dsprof.render.findings import render_findings
from dsprof.render.gpu import render_gpu
from dsprof.render.memory import render_report
from dsprof.render.safe_text import make_console
from dsprof.render.summary import render_full
from dsprof.reports.gpu import gpu_report
from dsprof.reports.memory import memory_report
from dsprof.reports.summary import summarize
from dsprof.run import load
from dsprof.units import fmt_bytes, fmt_flops
from tests.conftest import REPO, TRACES, trace_dir
from tests.unit.test_trace_advice import TRACE_SETS

TRACE_SETS_PRESENT = TRACES.exists()
# every shared trace, as sets that are each one job (test_trace_advice's, and the rest)
ONE_JOB = {**TRACE_SETS,
           "hta_a100_event_sync": ["event_sync_trace.json.gz"],
           "hta_cpu_only_gloo": ["rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz"],
           "hta_cupti_counters": ["benchmark_result_924719_1679055439_trace.json.gz"],
           "hta_memory_timeline": ["memory_timeline.raw.gz"],
           "hta_triton_tiny": ["triton_example.json.gz"]}

RESNET = "worker0.1623143089861.pt.trace.json.gz"


@cache
def _doc(folder: str, name: str) -> dict:
    with gzip.open(trace_dir(folder) / name, "rt") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    run_dir, _ = import_traces([trace_dir("kineto_resnet50_v100_mem") / RESNET],
                               tmp_path_factory.mktemp("resnet") / "run")
    return run_dir.path


def _raw_peak(device_type: int) -> tuple[int, int]:
    """(peak live bytes, bytes allocated up to it) of one device from the raw [memory]
    events: the running sum of Bytes, raised so it never drops below 0 (frees of blocks
    allocated before the trace)."""
    events = sorted((e["ts"], e["args"]["Bytes"]) for e in _doc("kineto_resnet50_v100_mem", RESNET)
                    ["traceEvents"] if e.get("name") == "[memory]"
                    and e["args"].get("Device Type") == device_type)
    running, low, sums = 0, 0, []
    for _ts, b in events:
        running += b
        low = min(low, running)
        sums.append(running)
    peak_at = max(range(len(sums)), key=lambda i: (sums[i], -i))
    allocated = sum(b for _ts, b in events[:peak_at + 1] if b > 0)
    return sums[peak_at] - low, allocated


def test_memory_shares_of_a_trace_without_addresses(resnet_run):
    # GIVEN tb_plugin's ResNet50 sample: [memory] events with Bytes only (no Addr), so no free
    # can be matched with its allocation
    with load(resnet_run) as run:
        # WHEN dsprof memory reports the peaks
        report = memory_report(run, top=50)
    peaks = {p.device: p for p in report.peaks}
    assert set(peaks) == {"cpu", "cuda:0"}
    for device, device_type in (("cpu", 0), ("cuda:0", 1)):
        p = peaks[device]
        raw_peak, raw_allocated = _raw_peak(device_type)
        # THEN the peak and the bytes allocated up to it are the raw events' own
        assert p.peak_bytes == raw_peak
        assert p.attribution == "allocated" and p.allocated_bytes == raw_allocated
        # AND module and site rows are shares of those allocated bytes: never negative, all
        # of them together exactly 100 %
        assert p.by_module == [] and p.by_site == []  # nothing is claimed live at the peak
        for table in ("module", "site"):
            rows = getattr(p, f"allocated_by_{table}")
            assert all(h.bytes > 0 for h in rows)
            assert sum(h.bytes for h in rows) == p.share_total(table) == raw_allocated
        # AND the category rows (live at the peak) stay within the peak
        assert all(h.bytes > 0 for h in p.by_category)
        assert sum(h.bytes for h in p.by_category) <= p.share_total("category") == p.peak_bytes


def test_memory_command_prints_no_negative_size_and_names_its_total(resnet_run):
    with load(resnet_run) as run:
        report = memory_report(run, top=10)
    buf = io.StringIO()
    render_report(report, make_console(file=buf, width=120, color_system=None), top=10)
    text = buf.getvalue()
    # THEN no size is negative (the DataLoader's -64.31 MiB of frees is gone)
    assert not re.search(r"-\d[\d.]* [KMG]?i?B", text)
    # AND each table's % column sums to at most 100 and says what it is a share of
    for table in re.split(r"\n(?=by |top allocation)", text)[1:]:
        shares = [float(m) for m in re.findall(r"│\s+([\d.]+) │\s+\d+ │\n", table)]
        # (each printed share is rounded to 0.1: up to 0.05 each over)
        assert shares and sum(shares) <= 100 + 0.05 * len(shares), table
    assert "by category (bytes live at the peak)" in text
    assert "top allocation sites (bytes allocated up to the peak, % of all" in text
    assert "no addresses" in text


def test_category_frees_of_memory_from_before_the_trace_are_not_negative(tmp_path):
    # GIVEN a trace whose first events free 96 B that were allocated before it started
    events = [{"ph": "X", "name": "ProfilerStep#1", "cat": "user_annotation", "pid": 1,
               "tid": 1, "ts": 0, "dur": 100},
              {"ph": "X", "name": "aten::empty", "cat": "cpu_op", "pid": 1, "tid": 1,
               "ts": 5, "dur": 10}]
    for ts, size in ((10, -64), (11, -32), (20, 128), (30, 256), (40, -128)):
        events.append({"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1, "ts": ts,
                       "args": {"Device Type": 0, "Device Id": -1, "Bytes": size}})
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    run_dir, _ = import_traces([path], tmp_path / "run")
    with load(run_dir.path) as run:
        (p,) = memory_report(run).peaks
    # THEN the peak is a lower bound that counts them (at least 96 B were live when the trace
    # began: it freed them), no row is negative, and the category rows plus what the trace did
    # not see allocated make the peak
    assert p.peak_bytes == (-96 + 128 + 256) + 96
    assert all(h.bytes > 0 for h in p.by_category + p.allocated_by_module
               + p.allocated_by_site)
    assert p.unattributed == 96
    assert sum(h.bytes for h in p.by_category) + p.unattributed == p.peak_bytes
    # AND the sites' shares are of the 384 B allocated up to the peak
    assert sum(h.bytes for h in p.allocated_by_site) == p.allocated_bytes == 128 + 256
    buf = io.StringIO()
    with load(run_dir.path) as run:
        render_report(memory_report(run), make_console(file=buf, width=120), top=5)
    assert "unattributed (allocated before the trace, unseen): 96 B" in buf.getvalue()


# -- traces that are not the ranks of one job ------------------------------------------------

def _import_cli(tmp_path, *paths):
    """``dsprof import`` in a subprocess: its exit status and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "dsprof", "import", *map(str, paths), "-o",
                           str(out)], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    return proc.returncode, proc.stderr, out


def test_two_unrelated_worker0_traces_are_refused(tmp_path):
    # GIVEN tb_plugin's two ResNet samples in one folder: both worker0, one process each
    # (the raw events' pids differ), recorded 19 h apart
    folder = trace_dir("kineto_resnet50_v100_mem")
    pids = {name: {e["pid"] for e in _doc("kineto_resnet50_v100_mem", name)["traceEvents"]
                   if e.get("cat") == "Operator"} for name in (RESNET,
                                                                "worker0.1623212756351.pt.trace.json.gz")}
    assert len(set.union(*pids.values())) == 2
    # WHEN the folder is imported
    rc, err, out = _import_cli(tmp_path, folder)
    # THEN one line, exit 2, no run directory, and the reason names both files and the pids
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "not ranks of one job" in err and "worker worker0" in err
    assert "pid 25738 and 5555" in err
    assert "import each on its own" in err
    assert not out.exists()


@pytest.mark.parametrize("folders, why", [
    # distributedInfo.world_size 2 vs 1
    (("hta_a100_2rank_nccl_r0", "hta_v100_1rank"), "world size 2 in one, 1 in the other"),
    # both distributedInfo.rank 0, two benchmark processes
    (("hta_a100_alexnet_small",), "both are rank 0 but come from different processes"),
    # rank 1 of a 2022 inference job beside rank 0 of a 2024 training job
    (("hta_a100_2rank_nccl_r0", "hta_inference_tiny"), "days apart"),
])
def test_traces_of_different_jobs_are_refused(tmp_path, folders, why):
    with pytest.raises(TraceFormatError, match="not ranks of one job") as exc:
        import_traces([trace_dir(f) for f in folders], tmp_path / "run")
    assert why in str(exc.value)
    assert not (tmp_path / "run").exists()


def test_ranks_of_one_job_still_import(tmp_path):
    # GIVEN the matched pair of ranks of the sampled 128-rank job (same world size, ranks 0/1,
    # recorded at the same time)
    run_dir, results = import_traces([trace_dir("hta_sampled_2rank_nccl")], tmp_path / "run")
    assert sorted(r.rank for r in results) == [0, 1]
    with load(run_dir.path) as run:
        assert run.meta["world_size"] == 128


def test_two_windows_of_one_worker_stay_one_rank(tmp_path):
    # GIVEN one process's trace written as two windows (tb_plugin names: same worker, the
    # same pid, one after the other)
    src = _doc("kineto_resnet50_v100_mem", RESNET)
    steps = sorted({e["ts"] for e in src["traceEvents"]
                    if str(e.get("name", "")).startswith("ProfilerStep#")})
    cut = steps[3]
    for stamp, keep in ((1623143089861, lambda e: e.get("ts", 0) < cut),
                        (1623143089999, lambda e: e.get("ts", 0) >= cut)):
        doc = {**src, "traceEvents": [e for e in src["traceEvents"] if keep(e)]}
        (tmp_path / f"worker0.{stamp}.pt.trace.json").write_text(json.dumps(doc))
    # WHEN the folder is imported
    run_dir, results = import_traces([tmp_path], tmp_path / "run")
    # THEN both windows are rank 0 of a one-rank run
    assert [r.rank for r in results] == [0]
    with load(run_dir.path) as run:
        assert run.meta["world_size"] == 1
        assert run.sql("SELECT count(DISTINCT step) FROM steps")[0][0] == len(steps)


# -- skip reasons that fit the device ----------------------------------------------------------

def _skips(run_path) -> dict[str, str]:
    with load(run_path) as run:
        res = analyze(run, write=False)
    return {s["analyzer"]: s["reason"] for s in res.skipped}


def test_batch_size_skip_on_a_v100_trace_says_what_a_gpu_trace_lacks(resnet_run):
    # GIVEN tb_plugin's V100 trace: deviceProperties give 32 GiB, its [memory] events carry
    # block sizes only (no Total Allocated / Total Reserved), and no batch size
    props = _doc("kineto_resnet50_v100_mem", RESNET)["deviceProperties"][0]
    gpu_mem = [e for e in _doc("kineto_resnet50_v100_mem", RESNET)["traceEvents"]
               if e.get("name") == "[memory]" and e["args"].get("Device Type") == 1]
    assert gpu_mem and not any("Total Reserved" in e["args"] for e in gpu_mem)
    reason = _skips(resnet_run)["batch_size"]
    # THEN the reason names the GPU's memory from the trace and what is missing, and none of
    # the advice meant for CPU runs
    assert "GPU trace" in reason and props["name"] in reason
    assert fmt_bytes(int(props["totalGlobalMem"] * 0.92)) in reason
    assert "allocator totals" in reason and "batch size" in reason
    assert "CPU run" not in reason and "--memory-budget" not in reason


def test_batch_size_skip_on_a_gpu_trace_without_memory_events(tmp_path):
    run_dir, _ = import_traces([trace_dir("hta_v100_1rank")], tmp_path / "run")
    reason = _skips(run_dir.path)["batch_size"]
    assert "GPU trace" in reason and "profile_memory=True" in reason
    assert "CPU run" not in reason and "needs the memory_series table" not in reason


# -- dsprof gpu: per step or per window, and never a measured-looking 0.0 % MFU ---------------

MS = 1_000_000
F1 = 2 * 1024 ** 3  # one fp32 1024^3 matmul


def _three_step_run(tmp_path):
    """Three 10 ms steps, each one matmul (M.mlp, F1 FLOPs) with one 1 ms TF32 kernel."""
    import pyarrow.parquet as pq

    from dsprof.rundir import RunDir
    from dsprof.schema import KERNELS, OPS, STEPS

    ops, kernels, steps = [], [], []
    for step in (1, 2, 3):
        t0 = step * 10 * MS
        ops += [{"rank": 0, "step": step, "id": 2 * step, "thread": 1, "cat": "cpu_op",
                 "name": "aten::mm", "start_ns": t0, "dur_ns": 2 * MS, "module": "M.mlp",
                 "phase": "forward", "flops": F1, "dtypes": '["float", "float"]',
                 "input_shapes": "[[1024, 1024], [1024, 1024]]"},
                {"rank": 0, "step": step, "id": 2 * step + 1, "parent_id": 2 * step,
                 "thread": 1, "cat": "cuda_runtime", "name": "cudaLaunchKernel",
                 "start_ns": t0 + 10_000, "dur_ns": 5_000, "correlation": 2 * step + 1}]
        kernels.append({"rank": 0, "step": step, "stream": 7, "kind": "compute",
                        "name": "cutlass_80_tensorop_s1688gemm_64x64_32x6_nn_align4",
                        "category": "gemm", "tensor_core": True, "start_ns": t0 + MS,
                        "dur_ns": MS, "correlation": 2 * step + 1,
                        "launch_id": 2 * step + 1, "op_id": 2 * step})
        steps.append({"rank": 0, "step": step, "start_ns": t0, "end_ns": t0 + 10 * MS,
                      "dur_ns": 10 * MS, "profiled": True, "source": "trace"})
    rd = RunDir.create(tmp_path / "run")
    for table, rows in ((OPS, ops), (KERNELS, kernels), (STEPS, steps)):
        d = rd.path / "tables" / table.name
        d.mkdir(parents=True)
        pq.write_table(table.build({c: [r.get(c) for r in rows] for c in table.column_names}),
                       d / "rank0.parquet")
    rd.write_meta({"source": "import", "trace_device_properties": [
        {"name": "NVIDIA A100-SXM4-80GB", "computeMajor": 8, "computeMinor": 0}]})
    return rd.path


def _gpu_text(rep) -> str:
    buf = io.StringIO()
    render_gpu(rep, make_console(file=buf, width=160, color_system=None))
    return buf.getvalue()


def test_per_module_flops_are_per_step_like_the_step_table(tmp_path):
    # GIVEN three steps of one matmul each
    with load(_three_step_run(tmp_path)) as run:
        rep = gpu_report(run)
    # THEN each step did F1 FLOPs, and so did the module per step (not 3 x F1 over the window)
    assert [(s["key"], s["flops"]) for s in rep.steps] == [("1", F1), ("2", F1), ("3", F1)]
    (mod,) = rep.modules
    assert mod["key"] == "M.mlp" and mod["flops"] == F1 and mod["time_ns"] == MS
    assert mod["mfu"] is not None and rep.flops_known
    text = _gpu_text(rep)
    # AND every table says whether it is per step or summed over the capture
    assert "FLOP/s and MFU per step" in text
    assert "FLOP/s and MFU per module, per step (mean of the 3 steps above)" in text
    assert "GPU time by kernel category, summed over the capture (3 steps)" in text
    assert fmt_flops(F1) in text and fmt_flops(3 * F1) not in text


def test_gpu_report_says_unknown_instead_of_mfu_zero(resnet_run):
    # GIVEN the V100 trace, whose convolutions record no parameters: FLOPs are known for
    # (almost) none of the gemm/conv kernel time
    with load(resnet_run) as run:
        rep = gpu_report(run)
    assert rep.tensor_core["flops_coverage"] < 0.05
    # THEN no MFU is given (not 0.0 %), and the report says why
    assert not rep.flops_known and all(s["mfu"] is None for s in rep.steps + rep.modules)
    text = _gpu_text(rep)
    assert "FLOP/s and MFU per step" not in text and "FLOP/s and MFU per module" not in text
    assert "FLOP/s and MFU: unknown (FLOPs are known for 0% of the gemm/conv/attention" in text


# -- issue 19's wrong numbers, on every shared trace -------------------------------------------

@pytest.mark.skipif(not TRACE_SETS_PRESENT, reason="../shared/traces is absent")
@pytest.mark.parametrize("folder", sorted(ONE_JOB))
def test_no_unknown_printed_as_zero_on_any_trace(tmp_path, folder):
    # GIVEN each shared trace set (one job each), imported
    run_dir, _ = import_traces([trace_dir(folder) / f for f in ONE_JOB[folder]],
                               tmp_path / "run")
    buf = io.StringIO()
    console = make_console(file=buf, width=200, color_system=None)
    # WHEN analyze, gpu and summary print it
    with load(run_dir.path) as run:
        render_findings(analyze(run, write=False), console, top=50, detail=50)
        render_gpu(gpu_report(run), console)
        render_full(summarize(run), console)
    text = buf.getvalue()
    # THEN an unknown size, FLOP count or MFU is never printed as a zero or a None
    assert "(None)" not in text and " None " not in text
    assert not re.search(r"move 0\.0 MiB|of 0\.0 MiB|MFU 0\.0 ?%", text)
    in_mfu_table = False
    for line in text.splitlines():
        if "MFU per" in line:
            in_mfu_table = True
        elif not any(c in line for c in "│┃━"):
            in_mfu_table = False
        elif in_mfu_table and "│" in line:  # a row: its MFU (last column) real or "unknown"
            assert not re.search(r"│\s*0\.0%\s*$", line), line


def _tiny_trace(path, *, dist=None, pid=7, host=None, ts=1_700_000_000_000_000):
    doc = {"schemaVersion": 1}
    if dist is not None:
        doc["distributedInfo"] = dist
    if host is not None:
        doc["host_name"] = host
    doc["traceEvents"] = [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": pid, "tid": 1, "ts": ts,
         "dur": 50},
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": pid, "tid": 1,
         "ts": ts - 10, "dur": 100}]
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("a, b, why", [
    ({"dist": {"rank": 0, "world_size": 2, "backend": "nccl"}},
     {"dist": {"rank": 1, "world_size": 2, "backend": "gloo"}}, "backend nccl in one, gloo"),
    ({"dist": {"rank": 0, "world_size": 2}}, {"dist": {"rank": 2, "world_size": 2}},
     "rank 2 is outside its world size 2"),
    ({"dist": {"rank": 0}, "host": "node-a"}, {"dist": {"rank": 0}, "host": "node-b"},
     "different hosts (node-a and node-b)"),
])
def test_headers_that_are_not_one_job_are_refused(tmp_path, a, b, why):
    files = [_tiny_trace(tmp_path / "a.json", **a), _tiny_trace(tmp_path / "b.json", **b)]
    with pytest.raises(TraceFormatError, match=re.escape(why)):
        import_traces(files, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_ranks_recorded_together_are_one_job(tmp_path):
    # GIVEN ranks 0 and 1 of a world of 2, two processes, recorded a second apart
    files = [_tiny_trace(tmp_path / "r0.json", dist={"rank": 0, "world_size": 2}, pid=11),
             _tiny_trace(tmp_path / "r1.json", dist={"rank": 1, "world_size": 2}, pid=12,
                         ts=1_700_000_001_000_000)]
    _run_dir, results = import_traces(files, tmp_path / "run")
    assert sorted(r.rank for r in results) == [0, 1]


def test_a_category_freeing_memory_from_before_the_trace_is_named_not_negative(tmp_path):
    # GIVEN a memory timeline (export_memory_timeline raw: [t_ns, action, bytes, category])
    # where 40 B of parameters allocated before it (and not listed as pre-existing) are freed
    records = [[1000, 2, 100, 3], [2000, 4, -40, 0], [3000, 2, 50, 4]]
    path = tmp_path / "memory_timeline.raw.gz"
    path.write_bytes(gzip.compress(json.dumps(records).encode()))
    run_dir, _ = import_traces([path], tmp_path / "run")
    with load(run_dir.path) as run:
        report = memory_report(run)
    (p,) = report.peaks
    # THEN the parameters' net frees are no row, but named as such; the rows' shares stay
    # within 100 % of the total they are shares of
    assert {h.key: h.bytes for h in p.by_category} == {"temporary": 100, "activation": 50}
    assert p.freed_before == 40
    assert sum(h.bytes for h in p.by_category) <= p.share_total("category")
    buf = io.StringIO()
    render_report(report, make_console(file=buf, width=120, color_system=None))
    text = buf.getvalue()
    assert "freed memory allocated before the trace: 40 B" in text
    assert not re.search(r"-\d+(\.\d+)? [KMG]?i?B", text)
