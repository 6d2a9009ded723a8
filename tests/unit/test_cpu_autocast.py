"""The cpu_autocast analyzer's wording and preconditions on synthetic CPU runs (the real runs:
tests/integration/test_cpu_autocast.py): bf16 emulated on a CPU without AVX512-BF16 or AMX,
a model cast to bf16 as a whole (no autocast), and the prices the saving is built from."""

from __future__ import annotations

from dsprof.analyzers.cpu_autocast import CpuAutocastAnalyzer
from dsprof.analyzers.registry import Context
from dsprof.metrics.ops.autocast_cost import bf16_seconds, cast_seconds, fp32_seconds
from tests.unit.test_analyzers_synthetic import MS, _cpu_autocast

SMALL = 4_194_304  # 32x256 @ 256x256


def run_analyzer(run) -> tuple[list, str | None]:
    analyzer = CpuAutocastAnalyzer()
    found = analyzer.run(Context(run))
    return found, analyzer.no_finding_reason


def test_the_saving_is_the_priced_casts_and_bf16_gemm_less_fp32():
    (f,), _ = run_analyzer(_cpu_autocast(SMALL, MS))
    shapes = "[[256], [32, 256], [256, 256]]"
    casts = cast_seconds("forward", 256 * 256) + cast_seconds("forward", 256)
    expected = (casts + bf16_seconds("aten::addmm", SMALL, shapes)
                - fp32_seconds("aten::addmm", SMALL, shapes))
    # per profiled step: the synthetic run profiles steps 0 and 1, its ops are in step 1
    assert abs(f.saving_s - expected / 2) < 1e-12
    # priced from shapes, not from the 1 ms the GEMM took profiled: unranked under 0.32 ms
    assert f.data["saving_clock"] == "thread_cpu" and f.data["impact_unknown"]


def test_a_cpu_without_bf16_support_is_told_bf16_is_emulated():
    (f,), _ = run_analyzer(_cpu_autocast(SMALL, MS, meta={"precision": {"cpu_bf16": "none"}}))
    assert "bf16 is emulated on this CPU" in f.title
    assert "neither AVX512-BF16 nor AMX" in f.explanation
    (amx,), _ = run_analyzer(_cpu_autocast(SMALL, MS, meta={"precision": {"cpu_bf16": "amx"}}))
    assert "emulated" not in amx.title and "growing the batch or width" in amx.explanation


def test_a_model_in_bf16_without_autocast_gets_no_autocast_advice():
    # GIVEN bf16 GEMMs with no forward cast of an fp32 weight (model.bfloat16())
    found, why = run_analyzer(_cpu_autocast(SMALL, MS, casts=0))
    # THEN nothing to turn off, and the reason says so
    assert found == [] and why is not None and "not under autocast" in why
