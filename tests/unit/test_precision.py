"""Precision advice on real GPU traces (imported), and its absence on CPU runs."""

from __future__ import annotations

from dsprof.analyzers.precision import PrecisionAnalyzer, peaks_of
from dsprof.analyzers.registry import analyze
from dsprof.ingest.importer import import_traces
from dsprof.run import load
from tests.conftest import trace_dir


def _findings(tmp_path, name):
    run_dir, _ = import_traces([trace_dir(name)], tmp_path / "run")
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
    assert peaks_of("NVIDIA H200")[3] == 989.0
    assert peaks_of("Some iGPU") is None
