"""``dsprof gpu RUN`` on imported real traces: the report's facts, HTA's view with --hta, and
what it says when FLOPs or the device are unknown."""

from __future__ import annotations

import json

from click.testing import CliRunner

from dsprof.cli import main
from dsprof.ingest.importer import import_traces
from tests.conftest import trace_dir


def _report(tmp_path, name: str, *flags: str) -> dict:
    path = trace_dir(name)
    if name == "kineto_resnet50_v100_mem":  # two unrelated runs: the import takes one
        path = path / "worker0.1623143089861.pt.trace.json.gz"
    run_dir, _ = import_traces([path], tmp_path / name)
    res = CliRunner().invoke(main, ["gpu", str(run_dir.path), "--json", *flags])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_a100_report_in_htas_view(tmp_path):
    rep = _report(tmp_path, "hta_a100_2rank_nccl_r0", "--hta")
    assert rep["device"] == "NVIDIA A100-PG509-200" and rep["peak_note"] == ""
    cats = {c["category"]: c for c in rep["categories"]}
    assert {"gemm", "conv", "communication", "elementwise"} <= set(cats)
    assert cats["communication"]["tensor_core_share"] == 0
    # the TF32 cutlass/xmma kernels of this trace are Tensor Core kernels
    assert 0.3 < rep["tensor_core"]["of_matrix"] <= 1
    (idle,) = rep["idle"]  # HTA 0.5.0: host_wait 738,746 us, kernel_wait 2,155 us
    assert round(idle["host_wait_ms"] * 1000) == 357247 + 381499
    assert round(idle["kernel_wait_ms"] * 1000) == 2155
    assert "microsecond" in rep["convention"]
    (launch,) = rep["launch"]
    assert launch["launches"] == 2516 and launch["delay_outliers"] == 180


def test_report_says_when_flops_and_device_are_unknown(tmp_path):
    rep = _report(tmp_path, "kineto_resnet50_v100_mem")
    assert rep["device"] == "Tesla V100-DGXS-32GB"
    # fp32 on Volta: no TF32, so the matmuls with shapes are misses for that reason
    assert {m["reason"] for m in rep["tc_misses"]} == {"fp32 on a GPU without TF32"}
    assert any("FLOPs are known for" in n for n in rep["notes"])
    mi250 = _report(tmp_path, "hta_amd_mi250")
    assert "unknown device 'AMD Radeon Graphics'" in mi250["peak_note"]
    # AMD Tensile GEMMs with an MFMA tile count as matrix-core kernels
    assert any(c["category"] == "gemm" and c["tensor_core_share"] > 0
               for c in mi250["categories"])
