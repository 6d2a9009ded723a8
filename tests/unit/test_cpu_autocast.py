"""The cpu_autocast analyzer's wording and preconditions on synthetic CPU runs (the real runs:
tests/integration/test_cpu_autocast.py): bf16 emulated on a CPU without AVX512-BF16 or AMX,
a model cast to bf16 as a whole (no autocast), and the prices the saving is built from."""

from __future__ import annotations

from dsprof.analyzers.cpu_autocast import CpuAutocastAnalyzer
from dsprof.analyzers.registry import Context
from dsprof.metrics.ops.autocast_cost import (
    bf16_seconds,
    cast_seconds,
    fp16_seconds,
    fp32_seconds,
)
from dsprof.metrics.ops.profile_readings import ProfileReadings
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import MS, SCRIPT, _cpu_autocast, steps, table

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


# -- a CPU that emulates bf16 (no AVX512-BF16, no AMX): priced from the run's profile ---------

EMULATED = {"precision": {"cpu_bf16": "none"}}
HUGE = 4_294_967_296  # 2048x1024 @ 1024x1024: AMX's bf16 prices say bf16 pays at this size


def test_on_an_emulating_cpu_the_bf16_gemms_are_priced_from_their_profiled_time():
    # GIVEN a 32x256 @ 256x256 bf16 addmm that took 1 ms profiled, on a CPU without bf16
    (f,), _ = run_analyzer(_cpu_autocast(SMALL, MS, meta=EMULATED))
    shapes = "[[256], [32, 256], [256, 256]]"
    casts = cast_seconds("forward", 256 * 256) + cast_seconds("forward", 256)
    # THEN the GEMM costs its profiled 1 ms over the 2 profiled steps (all steps are profiled
    # here: no full-speed step to scale by), not AMX's 0.03 ms
    assert f.data["bf16_priced_from"] == "profile"
    assert abs(f.data["bf16_gemm_s"] - 0.5e-3) < 1e-12
    assert abs(f.saving_s - (casts / 2 + 0.5e-3
                             - fp32_seconds("aten::addmm", SMALL, shapes) / 2)) < 1e-12
    assert "priced from this run" in f.explanation and "AMX's bf16 prices do not apply" in f.explanation


def test_on_an_emulating_cpu_large_gemms_are_never_said_to_pay():
    # GIVEN matmuls large enough that bf16 pays on AMX, emulated: 2 s each, as on an AVX2 EPYC
    found, why = run_analyzer(_cpu_autocast(HUGE, 2000 * MS))
    assert found == [] and why is not None and why.startswith("bf16 pays here")  # on AMX
    (f,), _ = run_analyzer(_cpu_autocast(HUGE, 2000 * MS, meta=EMULATED))
    # THEN a finding that bf16 is emulated, priced from the 2 s it took
    assert "bf16 is emulated on this CPU" in f.title and f.saving_s > 0.9
    # and an emulated GEMM that took less than its fp32 price gets a reason that says so
    found, why = run_analyzer(_cpu_autocast(HUGE, 7 * MS, meta=EMULATED))
    assert found == [] and why is not None
    assert why.startswith("the emulated bf16 matmul/conv ops took") and "pays" not in why


def _emulated_with_full_speed_steps(gemm_ms: float):
    """The synthetic run with full-speed steps of 20 ms after profiled ones of 40 ms."""
    run = _cpu_autocast(HUGE, int(gemm_ms * MS), meta=EMULATED)
    tables = {name: run.table(name) for name in ("ops",)}
    durs = [40, 40, 20, 20, 20, 20, 20, 20]
    return Run.from_tables(meta={**SCRIPT, **EMULATED}, ops=tables["ops"],
                           steps=steps(durs, profiled=[True, True] + [False] * 6))


def test_the_two_readings_rank_the_price_only_when_they_agree():
    # GIVEN profiled steps twice the full-speed ones: the scaled reading is half the profiled
    (f,), _ = run_analyzer(_emulated_with_full_speed_steps(2000))
    # THEN the price is their middle, 0.75 of the profiled time, and the range is given
    assert abs(f.data["bf16_scaled_s"] - f.data["bf16_profiled_s"] / 2) < 1e-12
    assert abs(f.data["bf16_gemm_s"] - 0.75 * f.data["bf16_profiled_s"]) < 1e-12
    low, high = f.data["saving_range_s"]
    assert abs((high - low) - f.data["bf16_profiled_s"] / 2) < 1e-9
    # half apart is looser than a quarter of the middle: not ranked
    assert f.data["impact_unknown"].startswith("emulated bf16 ops priced from the profile")
    assert "the two readings of the emulated bf16 ops differ" in f.explanation


def test_agreement_is_a_quarter_of_the_middle():
    assert ProfileReadings(74e-3, 71e-3, 78.7e-3, 82.1e-3).agree  # an MLP at batch 128
    assert not ProfileReadings(3.1e-3, 1.7e-3, 3.8e-3, 6.9e-3).agree  # two small convolutions
    assert ProfileReadings(1.0, 0.6, None, None).agree  # (1.0 - 0.6) / 2 = 0.25 x 0.8


# -- under torch.compile the casts are inside inductor's kernels ------------------------------

def _compiled(graph_inputs: str, meta: dict | None = None):
    """Step 1 (of 2 profiled): a CompiledFunction whose inputs are ``graph_inputs`` running a
    32x256 @ 256x256 bf16 addmm (1 ms) inside it, and no cast op recorded anywhere."""
    ops = [{"id": 1, "step": 1, "name": "CompiledFunction", "cat": "cpu_op", "thread": 1,
            "start_ns": 10 * MS, "dur_ns": 2 * MS, "phase": "forward", "dtypes": graph_inputs},
           {"id": 2, "parent_id": 1, "step": 1, "name": "aten::addmm", "cat": "cpu_op",
            "thread": 1, "start_ns": 10 * MS + 100_000, "dur_ns": MS, "phase": "forward",
            "flops": SMALL, "input_shapes": "[[256], [32, 256], [256, 256]]",
            "dtypes": '["c10::BFloat16", "c10::BFloat16", "c10::BFloat16"]'}]
    return Run.from_tables(meta={**SCRIPT, **(meta or {})}, steps=steps([20, 20]),
                           ops=table(*ops))


def test_a_compiled_graph_fed_fp32_that_runs_bf16_gemms_is_autocast():
    # GIVEN a compiled forward taking fp32 parameters and input, its GEMM in bf16, no cast op
    (f,), _ = run_analyzer(_compiled('["float", "float", "float"]', meta=EMULATED))
    # THEN autocast is found (its casts are inside the graph), and the explanation says so
    assert f.data["compiled_cast_ops_per_step"] == 0.5
    assert "casts run inside the compiled graph" in f.explanation
    assert "bf16 is emulated on this CPU" in f.title


def test_a_compiled_bf16_model_is_not_autocast():
    # GIVEN the same graph taking bf16 parameters (model.bfloat16() compiled)
    found, why = run_analyzer(_compiled('["c10::BFloat16", "c10::BFloat16", "float"]',
                                        meta=EMULATED))
    # THEN nothing to turn off: the model's dtype is the finding on this CPU
    assert why is not None and "not under autocast" in why
    assert [f.kind for f in found] == ["precision.cpu_emulated_model"]


# -- a model built in bf16 on a CPU that emulates bf16: its dtype is the fix -----------------

def test_a_bf16_model_on_an_emulating_cpu_is_told_to_train_in_fp32():
    # GIVEN a bf16 model (no cast of an fp32 weight) whose 32x256 @ 256x256 GEMM took 1 ms
    shapes = "[[256], [32, 256], [256, 256]]"
    (f,), why = run_analyzer(_cpu_autocast(SMALL, MS, casts=0, meta=EMULATED))
    # THEN no autocast to turn off, but the model's dtype: priced from the profile
    assert why is not None and "not under autocast" in why
    assert f.kind == "precision.cpu_emulated_model"
    assert abs(f.saving_s - (0.5e-3 - fp32_seconds("aten::addmm", SMALL, shapes) / 2)) < 1e-12
    assert "model = model.float()" in f.fix and not f.apply
    # a forward alone (inference): no gradients or optimizer state in its words
    assert f.title.startswith("Run the model in fp32") and "optimizer" not in f.explanation
    # with a backward GEMM it trains: their memory doubles too
    ops = _cpu_autocast(SMALL, MS, casts=0).table("ops").to_pylist()
    ops.append({**ops[-1], "id": 10, "phase": "backward", "start_ns": 15 * MS})
    (trained,), _ = run_analyzer(Run.from_tables(meta={**SCRIPT, **EMULATED},
                                                 steps=steps([20, 20]), ops=table(*ops)))
    assert trained.title.startswith("Train in fp32")
    assert "the optimizer's state" in trained.explanation  # the memory it costs
    # AND where the CPU has bf16 in hardware, a bf16 model is what it is for: nothing
    found, _ = run_analyzer(_cpu_autocast(SMALL, MS, casts=0,
                                          meta={"precision": {"cpu_bf16": "amx"}}))
    assert found == []


def _fp16(meta: dict):
    """The synthetic autocast step with its GEMM in fp16 (cast ops as for bf16)."""
    run = _cpu_autocast(SMALL, MS, meta=meta)
    ops = run.table("ops").to_pylist()
    for op in ops:
        if op["name"] == "aten::addmm":
            op["dtypes"] = '["c10::Half", "c10::Half", "c10::Half"]'
    return Run.from_tables(meta={**SCRIPT, **meta}, steps=steps([20, 20]), ops=table(*ops))


def test_emulated_fp16_is_priced_from_the_profile_in_fp16s_words():
    # GIVEN fp16 autocast on a CPU without AVX512-FP16 or AMX-FP16
    (f,), _ = run_analyzer(_fp16({"precision": {"cpu_bf16": "none", "cpu_fp16": "none"}}))
    # THEN priced from its profiled 1 ms as emulated bf16 is, with fp16's title and fix
    assert f.title.startswith("Turn fp16 autocast off: fp16 is emulated on this CPU")
    assert f.data["low_precision"] == "fp16" and abs(f.data["bf16_gemm_s"] - 0.5e-3) < 1e-12
    assert "dtype=torch.float16, enabled=False" in f.fix and f.data["cpu_fp16"] == "none"
    # AND on AMX-FP16 (not calibrated) or a run recorded before cpu_fp16, no verdict
    for isa in ({"cpu_fp16": "amx"}, {}):
        found, why = run_analyzer(_fp16({"precision": {"cpu_bf16": "none", **isa}}))
        assert found == [] and why is not None and why.startswith("fp16 autocast: ")


def test_fp16_on_avx512_fp16_is_priced_with_fp16s_own_prices_in_its_words():
    # GIVEN fp16 autocast on a CPU with AVX512-FP16 and no AMX-FP16 (and AMX for bf16)
    (f,), _ = run_analyzer(_fp16({"precision": {"cpu_bf16": "amx", "cpu_fp16": "avx512_fp16"}}))
    # THEN the saving is the casts and the fp16 GEMM priced from its shape, less fp32's
    # (fp16's prices, not bf16's: 32x256 @ 256x256 is 73 us in fp16, 37 in bf16)
    shapes = '[[256], [32, 256], [256, 256]]'
    fp16 = fp16_seconds("aten::addmm", SMALL, shapes)
    assert fp16 is not None and fp16 > 1.5 * bf16_seconds("aten::addmm", SMALL, shapes)
    casts = cast_seconds("forward", 256 * 256) + cast_seconds("forward", 256)
    assert abs(f.saving_s - (casts + fp16 - fp32_seconds("aten::addmm", SMALL, shapes)) / 2) \
        < 1e-12
    assert f.data["bf16_priced_from"] == "shapes" and f.data["cpu_fp16"] == "avx512_fp16"
    # in fp16's words, never bf16's: fp16 does not pay on this kind of CPU
    assert f.title.startswith("Turn fp16 autocast off: its casts, fp16 matmuls and convolutions")
    assert "bf16" not in f.title + f.explanation
    assert "fp16 does not pay at any size" in f.explanation
    assert "AVX512-FP16 and no AMX-FP16" in f.explanation
    assert "dtype=torch.float16, enabled=False" in f.fix


def test_fp16_convolution_backward_is_priced_as_the_reference_kernel_it_runs():
    # a 32x16x32x32 -> 32 3x3 convolution's backward: 823 ms in fp16, 6.6 ms in fp32 (measured)
    flops = 2 * 2 * 32 * 32 * 32 * 32 * 16 * 9
    fp16 = fp16_seconds("aten::convolution_backward", flops, None)
    fp32 = fp32_seconds("aten::convolution_backward", flops, None)
    assert fp16 is not None and fp32 is not None
    assert 0.7 < fp16 < 0.95 and fp32 < 0.01


def test_an_fp16_convolutions_backward_is_priced_from_its_profiled_time():
    # GIVEN fp16 autocast on AVX512-FP16 whose step holds a convolution's backward in fp16
    # that the profile shows taking 29 ms (its reference kernel's pace moves with the shape
    # and what runs around it: 12.4 ms alone, 29.2 ms in a training step, measured)
    run = _fp16({"precision": {"cpu_bf16": "amx", "cpu_fp16": "avx512_fp16"}})
    ops = run.table("ops").to_pylist()
    flops = 2 * 2 * 4 * 16 * 16 * 16 * 16 * 9
    ops.append({**ops[-1], "id": 10, "name": "aten::convolution_backward", "phase": "backward",
                "start_ns": 15 * MS, "dur_ns": 29 * MS, "flops": flops,
                "input_shapes": "[[4, 16, 16, 16], [4, 16, 16, 16], [16, 16, 3, 3]]",
                "dtypes": '["c10::Half", "c10::Half", "c10::Half"]'})
    (f,), _ = run_analyzer(Run.from_tables(meta=run.meta, steps=steps([20, 20]), ops=table(*ops)))
    (alone,), _ = run_analyzer(run)
    # THEN its 29 ms (less fp32's price) is in the saving, not the calibration's 13 ms
    conv_fp32 = fp32_seconds("aten::convolution_backward", flops, None)
    assert abs((f.saving_s - alone.saving_s) - (29e-3 - conv_fp32) / 2) < 1e-12
    assert "convolution_backward fp16" in " ".join(e.text for e in f.evidence)
