"""Ingest of every real trace in ../shared/traces, checked against counts computed
independently from the raw JSON (not through dsprof's parser)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from dsprof.ingest.importer import import_traces
from dsprof.run import load
from tests.conftest import all_trace_files, trace_dir

KERNEL_CATS = {"kernel", "Kernel"}
MEMCPY_CATS = {"gpu_memcpy", "Memcpy"}
MEMSET_CATS = {"gpu_memset", "Memset"}
HOST_STEP_CATS = {"user_annotation", "cpu_op", "Operator"}


def _raw(path: Path):
    with gzip.open(path, "rt") as fh:
        return json.load(fh)


TRACE_FILES = [p for p in all_trace_files() if "memory_timeline" not in p.name]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Each trace file imported once into its own run."""
    out = {}
    base = tmp_path_factory.mktemp("runs")
    for i, path in enumerate(TRACE_FILES):
        run_dir, _ = import_traces([path], base / f"run{i}")
        out[path] = run_dir.path
    return out


@pytest.mark.skipif(not TRACE_FILES, reason="../shared/traces is absent")
@pytest.mark.parametrize("path", TRACE_FILES, ids=lambda p: p.parent.name + "/" + p.name[:30])
def test_kernel_counts_match_the_file(path, imported):
    # GIVEN the kernel, memcpy and memset events counted straight from the JSON
    events = _raw(path)["traceEvents"]
    n_kernel = sum(1 for e in events if e.get("ph") == "X" and e.get("cat") in KERNEL_CATS)
    n_memcpy = sum(1 for e in events if e.get("ph") == "X" and e.get("cat") in MEMCPY_CATS)
    n_memset = sum(1 for e in events if e.get("ph") == "X" and e.get("cat") in MEMSET_CATS)
    n_sync = sum(1 for e in events if e.get("ph") == "X" and e.get("cat") == "cuda_sync")
    # WHEN dsprof imported it
    with load(imported[path]) as run:
        rows = dict(run.sql("SELECT kind, count(*) FROM kernels GROUP BY kind")) \
            if run.has("kernels") else {}
    # THEN every kernel is in the table, once
    assert rows.get("compute", 0) + rows.get("communication", 0) == n_kernel
    assert rows.get("memcpy", 0) == n_memcpy
    assert rows.get("memset", 0) == n_memset
    assert rows.get("sync", 0) == n_sync


@pytest.mark.skipif(not TRACE_FILES, reason="../shared/traces is absent")
@pytest.mark.parametrize("path", TRACE_FILES, ids=lambda p: p.parent.name + "/" + p.name[:30])
def test_steps_match_profiler_step_annotations(path, imported):
    # GIVEN the host ProfilerStep#N spans of the file
    events = _raw(path)["traceEvents"]
    expected = sorted(
        (int(m.group(1)), round(float(e["dur"]) * 1000))
        for e in events
        if e.get("ph") == "X" and e.get("cat") in HOST_STEP_CATS
        and (m := re.fullmatch(r"ProfilerStep#(\d+)", e.get("name", ""))))
    # WHEN imported
    with load(imported[path]) as run:
        got = sorted((s, d) for s, d in run.sql("SELECT step, dur_ns FROM steps")) \
            if run.has("steps") else []
    # THEN one step row per annotation, same number and duration (to the ns)
    assert [s for s, _ in got] == [s for s, _ in expected]
    for (_, d_got), (_, d_exp) in zip(got, expected):
        assert abs(d_got - d_exp) <= 1


def test_kernels_link_to_launching_ops():
    # GIVEN the A100 NCCL trace, whose kernels carry correlation ids shared with cudaLaunchKernel
    path = trace_dir("hta_a100_2rank_nccl_r0") / "nccl_data.json.gz"
    events = _raw(path)["traceEvents"]
    runtime_corr = {e["args"]["correlation"] for e in events
                    if e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})}
    expected_linked = sum(1 for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
                          and e["args"].get("correlation") in runtime_corr)
    # WHEN imported
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, _ = import_traces([path], Path(tmp) / "run")
        with load(run_dir.path) as run:
            linked, with_op, = run.sql(
                "SELECT count(launch_id), count(op_id) FROM kernels")[0]
            launch_names = {r[0] for r in run.sql(
                "SELECT DISTINCT o.name FROM kernels k JOIN ops o ON o.id = k.launch_id")}
            nccl = run.sql("SELECT count(*) FROM kernels WHERE kind = 'communication'")[0][0]
    # THEN each kernel whose launch is in the trace points at it, and the launch's parent op
    assert linked == expected_linked
    assert with_op > 0.9 * linked
    assert launch_names <= {n for n in launch_names if n.startswith("cuda")}
    assert nccl == sum(1 for e in events if e.get("cat") == "kernel" and "nccl" in e["name"])


def test_multi_rank_folder_import_keeps_ranks(tmp_path):
    # GIVEN the 2-rank NCCL folder (distributedInfo.rank 0 and 1)
    folder = trace_dir("hta_sampled_2rank_nccl")
    # WHEN imported as a folder
    run_dir, results = import_traces([folder], tmp_path / "run")
    # THEN each rank has its own parts and rows
    assert sorted(r.rank for r in results) == [0, 1]
    with load(run_dir.path) as run:
        per_rank = dict(run.sql("SELECT rank, count(*) FROM kernels GROUP BY rank"))
        assert per_rank == {0: 1204, 1: 1154}
        assert run.meta["world_size"] == 128
    assert (run_dir.path / "tables" / "ops" / "rank1.parquet").exists()


def test_memory_timeline_raw_becomes_memory_table(tmp_path):
    # GIVEN torch's export_memory_timeline raw output (not a Chrome trace)
    path = trace_dir("hta_memory_timeline") / "memory_timeline.raw.gz"
    records = _raw(path)
    # WHEN imported
    run_dir, _ = import_traces([path], tmp_path / "run")
    with load(run_dir.path) as run:
        n, total, cats = run.sql(
            "SELECT count(*), sum(bytes), count(DISTINCT category) FROM memory")[0]
        peak = run.sql("SELECT max(allocated) FROM memory")[0][0]
    # THEN every record is a row, bytes add up, categories are named, the peak is the running max
    assert n == len(records)
    assert total == sum(r[2] for r in records)
    assert cats > 3
    running, best = 0, 0
    for r in sorted(records, key=lambda r: (r[0] >= 0, r[0])):
        running += r[2]
        best = max(best, running)
    assert peak == best


def test_legacy_trace_phases_and_memory(tmp_path):
    # GIVEN the 2021 tb_plugin ResNet50 sample (Operator/Runtime/Kernel categories, [memory])
    path = trace_dir("kineto_resnet50_v100_mem") / "worker0.1623143089861.pt.trace.json.gz"
    events = _raw(path)["traceEvents"]
    n_mem = sum(1 for e in events if e.get("name") == "[memory]")
    run_dir, _ = import_traces([path], tmp_path / "run")
    with load(run_dir.path) as run:
        phases = dict(run.sql("SELECT phase, count(*) FROM ops GROUP BY phase"))
        mem_rows = run.sql("SELECT count(*) FROM memory")[0][0]
        conv_flops = run.sql("SELECT count(flops) FROM ops WHERE name LIKE '%convolution%'")[0][0]
        addmm = run.sql("SELECT input_shapes, flops FROM ops WHERE name = 'aten::addmm' LIMIT 1")
    # THEN backward, forward, optimizer and data phases are all recognized
    for phase in ("forward", "backward", "optimizer", "data"):
        assert phases.get(phase, 0) > 0, phases
    assert mem_rows == n_mem
    # and matmul FLOPs come from the shapes, while convolutions, whose stride this old trace
    # does not record, get none rather than a wrong number
    (shapes, flops), = addmm
    _, (m, k), (_, n) = json.loads(shapes)[:3]
    assert flops == 2 * m * k * n
    assert conv_flops == 0


def test_early_2021_trace_keeps_input_shapes(tmp_path):
    # GIVEN the torch.autograd.profiler trace of January 2021, which writes "Input dims"
    path = trace_dir("kineto_resnet50_v100_autograd") / "worker0.pt.trace.json.gz"
    events = _raw(path)["traceEvents"]
    with_dims = sum(1 for e in events if e.get("cat") == "Operator" and "Input dims" in e["args"])
    run_dir, _ = import_traces([path], tmp_path / "run")
    with load(run_dir.path) as run:
        n = run.sql("SELECT count(input_shapes) FROM ops WHERE cat = 'cpu_op'")[0][0]
        mm = run.sql("SELECT count(flops) FROM ops WHERE name = 'aten::addmm'")[0][0]
    assert with_dims > 0 and n == with_dims
    assert mm > 0


def test_many_ranks_ingest_in_worker_processes(tmp_path, monkeypatch, capfd):
    # GIVEN the 2-rank folder and the parallel threshold lowered so workers are used
    from dsprof.ingest import parallel
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    folder = trace_dir("hta_sampled_2rank_nccl")
    # WHEN imported (two ranks, two CPUs: two worker processes), the workers printing what
    # they import (to the stderr they share with this process)
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    run_dir, results = import_traces([folder], tmp_path / "run")
    monkeypatch.delenv("PYTHONPROFILEIMPORTTIME")
    # THEN the workers built Arrow tables without pyarrow importing pandas (dsprof's own
    # processes: dsprof/without_pandas.py)
    imported = capfd.readouterr().err
    loaded = {line.rpartition("|")[2].strip() for line in imported.splitlines()
              if line.startswith("import time:")}
    assert "pyarrow.lib" in loaded and "pandas.core" not in loaded
    # THEN the tables are what the in-process ingest gives
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 1 << 60)
    ref_dir, _ = import_traces([folder], tmp_path / "ref")
    with load(run_dir.path) as a, load(ref_dir.path) as b:
        for table in ("ops", "kernels", "steps"):
            q = f"SELECT * FROM {table} ORDER BY ALL"
            assert a.arrow(q).equals(b.arrow(q)), table
    assert sorted(r.rank for r in results) == [0, 1]


@pytest.mark.skipif(not TRACE_FILES, reason="../shared/traces is absent")
def test_gpu_convs_without_concrete_inputs_are_counted_as_unknown(imported):
    # GIVEN tb_plugin's ResNet50 V100 trace: shapes but no Concrete Inputs (2021), so the
    # stride of its cudnn convolutions is unknown
    path = next((p for p in TRACE_FILES if p.parent.name == "kineto_resnet50_v100_mem"), None)
    if path is None:
        pytest.skip("kineto_resnet50_v100_mem is absent")
    # WHEN imported
    with load(imported[path]) as run:
        unknown = run.meta["ingest_notes"]["flops_unknown"]
        gemm = run.sql("SELECT count(*), min(flops) FROM ops WHERE name = 'aten::addmm'")[0]
        conv_flops = run.sql("SELECT count(flops) FROM ops WHERE name LIKE '%conv%'")[0][0]
    # THEN the GEMMs have FLOPs, each conv (outermost op with a formula) is one unknown op,
    # and no conv got a guessed number
    assert gemm[0] > 0 and gemm[1] == 2 * 32 * 2048 * 1000
    assert conv_flops == 0
    assert set(unknown["kinds"]) == {"aten::convolution", "aten::cudnn_convolution_backward"}
    assert unknown["kinds"]["aten::convolution"] == unknown["kinds"][
        "aten::cudnn_convolution_backward"] > 0
