"""GPU time by module/phase, Tensor Core share, MFU, Tensor Core eligibility and the
tensor_core.* / launch.bound findings, on a hand-built run and on real traces."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

import dsprof
from dsprof.analyzers.launch_bound import LaunchBoundAnalyzer
from dsprof.analyzers.registry import Context
from dsprof.analyzers.tensor_cores import TensorCoreAnalyzer
from dsprof.devices import lookup, math_mode
from dsprof.ingest.importer import import_traces
from dsprof.metrics.gpu import attribution as ga
from dsprof.metrics.gpu.tc_eligibility import (
    REASON_TF32_OFF,
    REASON_UNALIGNED,
    alignment_dims,
    verdicts,
)
from dsprof.rundir import RunDir
from dsprof.schema import KERNELS, OPS, STEPS
from tests.conftest import trace_dir

MS = 1_000_000
F1 = 2 * 1024 ** 3          # fp32 1024^3 matmul, ran on Tensor Cores (TF32)
F3 = 2 * 1000 * 1020 * 1000  # fp16 matmul with K = 1020: not a multiple of 8


def _op(i, name, start, dur, module=None, phase=None, cat="cpu_op", parent=None, **kw):
    return {"rank": 0, "step": 1, "id": i, "parent_id": parent, "thread": 1, "cat": cat,
            "name": name, "start_ns": start, "dur_ns": dur, "module": module, "phase": phase,
            **kw}


def _launch(i, parent, start):
    return _op(i, "cudaLaunchKernel", start, 5_000, cat="cuda_runtime", parent=parent,
               correlation=i)


def _kernel(corr, op_id, name, category, tc, dur, start):
    return {"rank": 0, "step": 1, "stream": 7, "kind": "compute", "name": name,
            "category": category, "tensor_core": tc, "start_ns": start, "dur_ns": dur,
            "correlation": corr, "launch_id": corr, "op_id": op_id}


def _write(path, table, rows):
    d = path / "tables" / table.name
    d.mkdir(parents=True)
    pq.write_table(table.build({c: [r.get(c) for r in rows] for c in table.column_names}),
                   d / "rank0.parquet")


@pytest.fixture
def run(tmp_path):
    ops = [
        _op(1, "aten::mm", 0, 2 * MS, "M.blocks.0.mlp", "forward", flops=F1,
            dtypes='["float", "float"]', input_shapes="[[1024, 1024], [1024, 1024]]"),
        _launch(2, 1, 10_000),
        _op(3, "aten::mm", 3 * MS, 3 * MS, "M.blocks.0.attn", "backward", flops=F3,
            dtypes='["c10::Half", "c10::Half"]', input_shapes="[[1000, 1020], [1020, 1000]]"),
        _launch(4, 3, 3 * MS + 10_000),
        _op(5, "aten::add", 7 * MS, 100_000, "M.blocks.0.mlp", "forward"),
        _launch(6, 5, 7 * MS + 10_000),
    ]
    kernels = [
        _kernel(2, 1, "cutlass_80_tensorop_s1688gemm_64x64_32x6_nn_align4", "gemm", True, MS,
                MS),
        _kernel(4, 3, "ampere_sgemm_128x64_nn", "gemm", False, 2 * MS, 4 * MS),
        _kernel(6, 5, "vectorized_elementwise_kernel", "elementwise", False, MS, 8 * MS),
    ]
    steps = [{"rank": 0, "step": 1, "start_ns": 0, "end_ns": 10 * MS, "dur_ns": 10 * MS,
              "profiled": True, "source": "trace"}]
    rd = RunDir.create(tmp_path / "run")
    for table, rows in ((OPS, ops), (KERNELS, kernels), (STEPS, steps)):
        _write(rd.path, table, rows)
    rd.write_meta({"source": "import", "trace_device_properties": [
        {"name": "NVIDIA A100-SXM4-80GB", "computeMajor": 8, "computeMinor": 0}]})
    with dsprof.load(rd.path) as loaded:
        yield loaded


def test_gpu_time_by_module_phase_and_rollup(run):
    got = {(g.module, g.phase): (g.gpu_ns, g.kernels) for g in ga.gpu_time_by_module(run.con)}
    assert got == {("M.blocks.0.mlp", "forward"): (2 * MS, 2),
                   ("M.blocks.0.attn", "backward"): (2 * MS, 1)}
    rolled = {g.module: g.gpu_ns for g in ga.gpu_time_by_module(run.con, rollup=True,
                                                                 by_phase=False)}
    assert rolled == {"M": 4 * MS, "M.blocks": 4 * MS, "M.blocks.0": 4 * MS,
                      "M.blocks.0.mlp": 2 * MS, "M.blocks.0.attn": 2 * MS}


def test_tensor_core_share_per_run_step_and_module(run):
    (r,) = ga.tensor_core_share(run.con, "run")
    assert (r.kernel_ns, r.matrix_ns, r.tc_ns) == (4 * MS, 3 * MS, MS)
    assert r.of_matrix == pytest.approx(1 / 3) and r.of_kernels == pytest.approx(0.25)
    assert [s.key for s in ga.tensor_core_share(run.con, "step")] == ["1"]
    by_mod = {m.key: m.of_matrix for m in ga.tensor_core_share(run.con, "module")}
    assert by_mod == {"M.blocks.0.mlp": 1.0, "M.blocks.0.attn": 0.0}


def test_mfu_uses_the_peak_of_the_math_mode_actually_used(run):
    peak, note = ga.peak_for(run.meta)
    assert peak.name == "A100 SXM4 80GB" and note == ""
    (step,) = ga.throughput_per_step(run.con, peak)
    # fp32 on Tensor Cores counts against the TF32 peak, fp16 against the fp16 peak
    at_peak = F1 / 156e12 + F3 / 312e12
    assert step.flops == F1 + F3
    assert step.mfu == pytest.approx(at_peak / 0.010)
    assert step.flops_per_s == pytest.approx((F1 + F3) / 0.010)
    mods = {t.key: t for t in ga.throughput_per_module(run.con, peak)}
    # per module, the time is the module's GPU time
    assert mods["M.blocks.0.mlp"].mfu == pytest.approx(F1 / 156e12 / 0.002)
    assert math_mode("float", True) == "tf32" and math_mode("c10::BFloat16", False) == "bf16"


def test_unknown_device_says_so():
    peak, note = ga.peak_for({"source": "import",
                              "trace_device_properties": [{"name": "AMD Radeon Graphics"}]})
    assert peak is None and "unknown device 'AMD Radeon Graphics'" in note
    assert lookup("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert lookup("NVIDIA H100 PCIe").name == "H100 PCIe"
    assert lookup("NVIDIA H200").tflops["bf16"] == 989.5
    assert lookup("Tesla V100-SXM2-32GB").peak_flops("tf32") is None  # Volta has no TF32
    assert lookup("NVIDIA L4").name == "L4" and lookup("NVIDIA L40S").name == "L40S"


def test_eligibility_verdicts_and_reasons(run):
    vs = {v.op_id: v for v in verdicts(ga.flop_ops(run.con), run.meta)}
    assert vs[1].tensor_core and vs[1].measured and vs[1].reason is None
    assert not vs[3].tensor_core and vs[3].reason == REASON_UNALIGNED
    assert vs[3].dims == {"M": 1000, "K": 1020, "N": 1000} and vs[3].time_ns == 2 * MS
    # on a CPU run (no kernels) an fp32 matmul with TF32 off is predicted to miss them
    cpu_op = {"rank": 0, "id": 9, "step": 1, "name": "aten::addmm", "module": "M", "phase":
              "forward", "flops": 1, "dtypes": '["float", "float", "float"]',
              "input_shapes": "[[64], [16, 32], [32, 64]]", "dur_ns": 5, "gpu_ns": None,
              "any_tc": None, "n_kernels": 0}
    meta = {"precision": {"matmul_allow_tf32": False, "cudnn_allow_tf32": True}}
    (v,) = verdicts([cpu_op], meta)
    assert (v.tensor_core, v.measured, v.reason) == (False, False, REASON_TF32_OFF)
    assert v.dims == {"M": 16, "K": 32, "N": 64}
    meta["precision"]["matmul_allow_tf32"] = True
    (v,) = verdicts([cpu_op], meta)
    assert v.tensor_core and v.reason is None


def test_unaligned_dims_finding_with_measured_saving(run):
    findings = TensorCoreAnalyzer().run(Context(run))
    (f,) = findings
    assert f.kind == "tensor_core.unaligned_dims" and "K=1020" in f.title
    assert f.saving_s == pytest.approx(0.002 * 0.5) and f.confidence == "medium"
    assert f.evidence[0].module == "M.blocks.0.attn" and f.evidence[0].op_ids == (3,)


def test_launch_bound_fires_on_the_a100_trace_only(tmp_path):
    found = {}
    for name in ("hta_a100_2rank_nccl_r0", "hta_v100_1rank"):
        rd, _ = import_traces([trace_dir(name)], tmp_path / name)
        with dsprof.load(rd.path) as r:
            found[name] = LaunchBoundAnalyzer().run(Context(r))
    (f,) = found["hta_a100_2rank_nccl_r0"]
    assert f.kind == "launch.bound" and f.data["median_kernel_us"] < 50
    # the GPU idles most of a ~220 ms step waiting for the host, but launch calls take only
    # ~8.5 ms of it: a CUDA graph removes those, not the syncs in DDP's forward (issue 19)
    assert 100 < f.data["host_bound_ms_per_step"] < 250
    assert 0.005 < f.saving_s < 0.012 and f.saving_s * 1e3 == f.data["launch_api_ms_per_step"]
    assert "other host work" in f.title
    assert "torch.compile" in f.fix and "CUDAGraph" in f.fix
    # the V100 ResNet keeps 800 launches queued: GPU-bound, nothing to recover
    assert found["hta_v100_1rank"] == []


@pytest.mark.parametrize("name, dims, expected", [
    # recorded by torch 2.13 for Conv2d(4, 8, 3, stride=2, groups=2) on a batch of 2
    ("aten::convolution", [[2, 4, 9, 9], [8, 2, 3, 3], [8]], {"C_in": 4, "C_out": 8}),
    ("aten::convolution_backward", [[2, 8, 4, 4], [2, 4, 9, 9], [8, 2, 3, 3]],
     {"C_in": 4, "C_out": 8}),
    # tb_plugin's ResNet50 V100 trace (2021): (input, grad_out, weight)
    ("aten::cudnn_convolution_backward", [[32, 512, 7, 7], [32, 2048, 7, 7],
                                          [2048, 512, 1, 1]], {"C_in": 512, "C_out": 2048}),
    ("aten::cudnn_convolution_backward_input", [[], [32, 2048, 7, 7], [2048, 512, 1, 1]],
     {"C_in": 512, "C_out": 2048}),
    ("aten::cudnn_convolution_backward_weight", [[], [32, 2048, 7, 7], [32, 512, 7, 7]],
     {"C_in": 512, "C_out": 2048}),
])
def test_conv_alignment_dims_read_each_ops_own_layout(name, dims, expected):
    # the batch size (2, 32) is never taken for a channel count
    assert alignment_dims(name, dims) == expected


def test_a_token_count_that_changes_with_the_batch_is_one_finding(tmp_path):
    # GIVEN fp16 matmuls of a dynamically padded batch (M = the batch's tokens: 503, 500, 497,
    # one step each) in three projections, and a head whose fixed N = 1001 is unaligned
    ops, i = [], 0
    steps = []
    for step, tokens in enumerate((503, 500, 497, 504), start=1):
        for proj in ("q_proj", "k_proj", "v_proj"):
            i += 1
            ops.append({**_op(i, "aten::mm", (step * 10 + i) * MS, MS, f"M.layers.0.{proj}",
                              "forward", flops=2 * tokens * 64 * 64, dtypes='["c10::Half"]',
                              input_shapes=f"[[{tokens}, 64], [64, 64]]"), "step": step})
        i += 1
        ops.append({**_op(i, "aten::mm", (step * 10 + i) * MS, MS, "M.head", "forward",
                          flops=2 * 504 * 64 * 1001, dtypes='["c10::Half"]',
                          input_shapes="[[504, 64], [64, 1001]]"), "step": step})
        steps.append({"rank": 0, "step": step, "start_ns": step * 10 * MS,
                      "end_ns": (step + 1) * 10 * MS, "dur_ns": 10 * MS, "profiled": True,
                      "source": "trace"})
    rd = RunDir.create(tmp_path / "run")
    for table, rows in ((OPS, ops), (STEPS, steps)):
        _write(rd.path, table, rows)
    rd.write_meta({"source": "import", "trace_device_properties": [
        {"name": "NVIDIA A100-SXM4-80GB", "computeMajor": 8, "computeMinor": 0}],
        "frameworks": ["transformers", "trl.config:SFTConfig"]})
    with dsprof.load(rd.path) as loaded:
        findings = TensorCoreAnalyzer().run(Context(loaded))
    by_key = {f.key: f for f in findings}
    # THEN the batch-sized dim is one finding over every module and size (not one per size
    # and module: 79 notes on a packed SFT run), its switch the batch's padding
    batch = by_key.pop("batch_sized")
    assert batch.data["ops"] == 9 and batch.data["modules"] == 3 and batch.data["shapes"] == 9
    assert batch.data["dims"] == ["M"] and batch.data["sizes"] == [497, 500, 503]
    assert "497 to 503" in batch.title and "pad_to_multiple_of=8" in batch.fix
    assert batch.fix.startswith("# TRL: SFTConfig(..., pad_to_multiple_of=8)")
    # AND the head's fixed size keeps its own finding, a model size to round up
    (head,) = by_key.values()
    assert "N=1001" in head.title and "M.head" in head.title and head.data["ops"] == 4


def test_a_heads_backward_matmuls_at_a_fixed_batch_are_no_batch_sized_dim(tmp_path):
    # GIVEN a 128 -> 2 head at a fixed batch of 32: its backward's two matmuls, the input's
    # gradient [32, 2] @ [2, 128] and the weight's [2, 32] @ [32, 128], in every step
    ops, steps, i = [], [], 0
    for step in range(1, 5):
        for shapes in ("[[32, 2], [2, 128]]", "[[2, 32], [32, 128]]"):
            i += 1
            ops.append({**_op(i, "aten::mm", (step * 10 + i) * MS, MS, "M.head", "backward",
                              flops=2 * 32 * 2 * 128, dtypes='["c10::Half"]',
                              input_shapes=shapes), "step": step})
        steps.append({"rank": 0, "step": step, "start_ns": step * 10 * MS,
                      "end_ns": (step + 1) * 10 * MS, "dur_ns": 10 * MS, "profiled": True,
                      "source": "trace"})
    rd = RunDir.create(tmp_path / "run")
    for table, rows in ((OPS, ops), (STEPS, steps)):
        _write(rd.path, table, rows)
    rd.write_meta({"source": "import", "trace_device_properties": [
        {"name": "NVIDIA A100-SXM4-80GB", "computeMajor": 8, "computeMinor": 0}]})
    with dsprof.load(rd.path) as loaded:
        findings = TensorCoreAnalyzer().run(Context(loaded))
    # THEN the 2 is the head's size, not the batch's: no "pad each batch" finding (the same
    # letter names 2 in one matmul and 32 in the other: "a batch-sized K/M of 2")
    assert "batch_sized" not in {f.key for f in findings}, [f.title for f in findings]
    assert any("=2" in f.title and "M.head" in f.title for f in findings), \
        [f.title for f in findings]
