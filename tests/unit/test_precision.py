"""Precision advice on real GPU traces (imported), and its absence on CPU runs."""

from __future__ import annotations

from dsprof.analyzers.precision import PrecisionAnalyzer, peaks_of
from dsprof.analyzers.registry import analyze
from dsprof.ingest.importer import import_traces
from dsprof.run import load
from tests.conftest import trace_dir


def _findings(tmp_path, name):
    path = trace_dir(name)
    if name == "kineto_resnet50_v100_mem":  # two unrelated runs: the import takes one
        path = path / "worker0.1623143089861.pt.trace.json.gz"
    run_dir, _ = import_traces([path], tmp_path / "run")
    with load(run_dir.path) as run:
        return analyze(run, only=(PrecisionAnalyzer.name,), write=False)


def test_fp32_resnet_on_v100_gets_fp16_autocast_with_a_gain_and_no_knob(tmp_path):
    # GIVEN ResNet50 trained in fp32 on a V100 (no bf16 there)
    # WHEN analyzed
    out = _findings(tmp_path, "kineto_resnet50_v100_mem")
    # THEN one precision finding: fp16 + GradScaler, a positive gain, no automatic knob
    (f,) = out.findings
    assert f.kind == "precision.fp32_matmul" and "fp16 autocast" in f.title
    assert f.saving_s > 0 and f.apply == {} and "GradScaler" in f.fix
    assert f.data["tf32"] is False and f.data["fp32_s"] > f.data["low_precision_s"] == 0


def test_tf32_matmuls_on_a100_get_bf16_autocast_with_the_knob(tmp_path):
    # GIVEN an A100 trace whose fp32 GEMMs already use TF32 Tensor Cores
    out = _findings(tmp_path, "hta_a100_2rank_nccl_r0")
    # THEN bf16 autocast is advised against TF32 (x2 at most), applied by DS_AUTOCAST
    (f,) = out.findings
    assert f.apply == {"DS_AUTOCAST": "bf16"} and f.data["tf32"] is True
    assert f.data["assumed_speedup"] == 2.0 and f.saving_s > 0


def test_peaks_are_known_for_the_lent_gpu_kinds():
    assert peaks_of("NVIDIA H200")[3] == 989.5
    assert peaks_of("Some iGPU") is None


def _gpu_trace(path, mms: list[tuple[str, str, int]]):
    """A minimal Kineto trace of matmuls on an A100, (dtype, kernel name, kernel us) each per
    step: the mock this needs (no GPU here)."""
    import json

    events = []
    for step in range(2):
        t0 = step * 5000
        events.append({"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{step}",
                       "pid": 1, "tid": 1, "ts": t0, "dur": 4000})
        for k, (dtype, kernel, dur) in enumerate(mms):
            ext, corr, t = 10 + 10 * step + k, 100 + 10 * step + k, t0 + 10 + 1500 * k
            events += [
                {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": t,
                 "dur": 100, "args": {"External id": ext,
                                      "Input Dims": [[4096, 4096], [4096, 4096]],
                                      "Input type": [dtype, dtype]}},
                {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1,
                 "tid": 1, "ts": t + 10, "dur": 5,
                 "args": {"correlation": corr, "External id": ext}},
                {"ph": "X", "cat": "kernel", "name": kernel, "pid": 0, "tid": 7, "ts": t + 40,
                 "dur": dur, "args": {"correlation": corr, "stream": 7, "device": 0,
                                      "External id": ext}},
            ]
    path.write_text(json.dumps({"deviceProperties": [{"id": 0, "name": "NVIDIA A100-SXM4-80GB",
                                                      "computeMajor": 8, "computeMinor": 0}],
                                "traceEvents": events}))
    return path


SGEMM = ("float", "ampere_sgemm_128x64_nn", 1000)
BF16 = ("c10::BFloat16", "ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_nn", 1000)


def test_amp_already_on_gets_no_precision_advice(tmp_path):
    # GIVEN one step of fp32 matmuls, and one under autocast: a bf16 matmul plus the fp32
    # matmul autocast leaves alone (30 % of matmul time, above the 5 % floor on its own)
    fp32 = _gpu_trace(tmp_path / "fp32.json", [SGEMM, SGEMM])
    amp = _gpu_trace(tmp_path / "amp.json", [BF16, BF16, (*SGEMM[:2], 860)])
    results = {}
    for name, trace in (("fp32", fp32), ("amp", amp)):
        run_dir, _ = import_traces([trace], tmp_path / f"run-{name}")
        with load(run_dir.path) as run:
            results[name] = analyze(run, only=(PrecisionAnalyzer.name,), write=False).findings
    # THEN fp32 gets bf16 autocast advice (x4 cap: 312 vs 19.5 TFLOPS); with AMP on, none
    (f,) = results["fp32"]
    assert f.apply == {"DS_AUTOCAST": "bf16"} and f.data["assumed_speedup"] == 4.0
    assert f.data["fp32_s"] == 2000e-6
    assert results["amp"] == []
