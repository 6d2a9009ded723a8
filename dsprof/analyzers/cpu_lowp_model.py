"""A model trained in bf16/fp16 on a CPU that emulates it: run it in fp32.

``model.bfloat16()`` (or ``from_pretrained(..., dtype=torch.bfloat16)``, Lightning's
``precision="bf16-true"``) runs every matmul and convolution in bf16. On a CPU with neither
AVX512-BF16 nor AMX those run PyTorch's emulated kernels (``metrics/ops/emulated_bf16.py``): on
one thread of this project's AVX2 EPYC an MLP 256->512->512->10 at batch 64 with AdamW took
35.6-38.3 ms a step in bf16 and 5.0 ms in fp32, and dsprof's top finding was the fused AdamW's
0.89 ms. There is no autocast to turn off (the ``cpu_autocast`` analyzer finds none: no cast of
an fp32 weight), so the fix is the model's dtype.

Price: the low-precision matmul/conv ops from the run's profile (the two readings of
``emulated_bf16.py``, their middle; unranked where they disagree) less the same ops priced in
fp32 from shapes. Not priced: the other ops the model runs in low precision (activations,
norms; converted cheaply) and the optimizer, which steps twice the bytes in fp32. The memory
cost is stated: parameters, their gradients and the optimizer's state double (an inference
run, with no backward GEMM, is told to run the model in fp32: its parameters). Found only where
the CPU emulates the dtype: with AVX512-BF16 or AMX a bf16 model is what the hardware is for.
No knob applies it (casting a model's dtype under the script is no longer the same program),
so it is verified by running the changed script.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from dsprof.analyzers.frameworks import framework_fix
from dsprof.analyzers.registry import Context
from dsprof.findings import SAVING_CLOCK, THREAD_CPU, Evidence, Finding
from dsprof.metrics.noise_floor import MIN_PRICED_CPU_S
from dsprof.metrics.ops.autocast_cost import fp32_seconds
from dsprof.metrics.ops.emulated_bf16 import emulated_bf16_seconds
from dsprof.metrics.ops.profile_readings import AGREEMENT, ProfileReadings
from dsprof.units import fmt_bytes

HARDWARE = {"bf16": "AVX512-BF16 nor AMX", "fp16": "AVX512-FP16 nor AMX-FP16"}
"""The instructions that run the low precision in hardware, for "this CPU has neither ..."."""

_TORCH_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}


def gemm_evidence(priced: list[tuple[Any, float, float]], n: int, lo: str, emulated: bool,
                  top: int = 3) -> list[Evidence]:
    """The ``top`` (module, op, phase, shapes) groups of low-precision GEMMs whose price falls
    most going to fp32: ``priced`` rows are (op row, low-precision seconds, fp32 seconds),
    the op row's fields rank, id, name, phase, module, input_shapes, dtypes, dur_ns, flops."""
    ms = 1e3
    groups: dict[tuple[str, str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    for g, b, p in priced:
        slot = groups[(g[4] or "(outside modules)", g[2], g[3], g[5] or "")]
        slot[0] += g[7] / 1e9
        slot[1] += b
        slot[2] += p
        slot[3] = g[0]
    out = []
    for (module, op, phase, shapes), (t, b, p, rank) in sorted(
            groups.items(), key=lambda kv: kv[1][2] - kv[1][1])[:top]:
        out.append(Evidence(
            text=(f"{op} {lo} {shapes} in {module}, {phase}: {t / n * ms:.3f} ms profiled "
                  f"(emulated), priced {p / n * ms:.3f} ms in fp32" if emulated else
                  f"{op} {lo} {shapes} in {module}, {phase}: priced {b / n * ms:.3f} ms "
                  f"in {lo}, {p / n * ms:.3f} ms in fp32 ({t / n * ms:.3f} ms profiled)"),
            rank=int(rank), module=module, value=(b - p) / n))
    return out


def emulated_model_finding(ctx: Context, lo: str, low: list[tuple[Any, ...]], n: int,
                           analyzer: str) -> Finding | None:
    """The finding for a model that runs its ``low`` GEMMs (rows as in :func:`gemm_evidence`)
    in ``lo`` on a CPU that emulates it, over ``n`` profiled steps; None where fp32 is priced
    no faster."""
    w = ctx.words
    ms = 1e3
    emulated = emulated_bf16_seconds(ctx, low, n)
    priced = [(g, g[7] / 1e9, fp32_seconds(g[2], int(g[8]), g[5]) or 0.0) for g in low]
    fp32_s = sum(p for _, _, p in priced) / n
    saving = emulated.estimate_s - fp32_s
    if saving <= 0:
        return None
    low_range, high_range = emulated.saving_range(saving)
    step = ctx.run.facts.step.median_s
    params = parameter_bytes(ctx)
    # an inference run (no backward) has no gradients or optimizer state to double
    trains = any(g[3] == "backward" for g in low)
    also = (", and their gradients and the optimizer's state double with them" if trains
            else "")
    memory = (f"the model's {fmt_bytes(params)} of {lo} parameters become "
              f"{fmt_bytes(2 * params)} in fp32{also}" if params else
              "its parameters" + (", their gradients and the optimizer's state" if trains else "")
              + " take twice the memory")
    explanation = (
        f"The model runs {len(low) / n:.3g} matmul/conv ops {w.per_step} in {lo} with no "
        f"autocast around them (no fp32 weight is cast: the model itself is {lo}). This CPU has "
        f"neither {HARDWARE[lo]}: they run PyTorch's emulated kernels, slower than fp32 at any "
        f"size. Priced from this run: {readings_words(emulated, w.per_step)}. In fp32 they "
        "take about "
        f"{fp32_s * ms:.3f} ms (priced at full speed from shapes and FLOPs as calibrated on a "
        "Xeon: metrics/ops/autocast_cost.py)"
        + (f", so the step would go from {step * ms:.3f} to about {(step - saving) * ms:.3f} ms"
           if step else "")
        + f" (saving {low_range * ms:.3g}-{high_range * ms:.3g} ms by the "
        f"two readings). The other ops the model runs in {lo}"
        + (" and the optimizer (twice the bytes in fp32)" if trains else "")
        + f" are not priced. The cost: {memory}.")
    data: dict[str, Any] = {
        "low_precision": lo, "bf16_gemm_s": emulated.estimate_s, "fp32_priced_s": fp32_s,
        "bf16_profiled_s": emulated.profiled_s, "bf16_scaled_s": emulated.scaled_s,
        "saving_range_s": [low_range, high_range],
        "parameter_bytes": params or None, SAVING_CLOCK: THREAD_CPU,
        "fp32_step_s": (step - saving) if step else None}
    unranked = unranked_why(emulated, saving, f"emulated {lo} ops")
    if unranked:
        data["impact_unknown"], why = unranked
        explanation += why
    fix = framework_fix(ctx, "model_fp32") + (
        f"# plain PyTorch: build the model in fp32 ({lo} is emulated on this CPU)\n"
        f"model = model.float()  # instead of .to(torch.{_TORCH_DTYPE[lo]})"
        + ("; before the optimizer is built\n" if trains else "\n")
        + "x = x.float()  # the floating-point inputs made in the same dtype (not token ids)")
    return Finding(
        analyzer=analyzer, kind="precision.cpu_emulated_model", key=f"cpu-{lo}-model",
        title=f"{'Train' if trains else 'Run the model'} in fp32: {lo} is emulated on this CPU "
              f"and costs {saving * ms:.3g} ms {w.a_step}",
        saving_s=saving, confidence="low", explanation=explanation,
        evidence=tuple(gemm_evidence(priced, n, lo, True)), fix=fix,
        verify=("paste the fix, run again and compare: dsprof diff RUN NEW_RUN"),
        data=data)


def readings_words(emulated: ProfileReadings, per_step: str) -> str:
    """The two readings of ``emulated`` and the price taken, in words."""
    ms = 1e3
    scaled = (f"scaled by the full-speed step over the profiled one "
              f"({emulated.full_speed_step_s * ms:.3f} / {emulated.profiled_step_s * ms:.3f} "
              f"ms), {emulated.scaled_s * ms:.3f} ms"
              if emulated.full_speed_step_s and emulated.profiled_step_s else
              "with no full-speed step to scale by, the same")
    return (f"{emulated.profiled_s * ms:.3f} ms {per_step} profiled (an upper bound: recording "
            f"slows ops), {scaled}; the middle, {emulated.estimate_s * ms:.3f} ms, is taken")


def unranked_why(readings: ProfileReadings | None, saving: float,
                 ops: str) -> tuple[str, str] | None:
    """(``impact_unknown`` reason, the sentence for the explanation) for a CPU price that is
    not ranked: ``ops`` ("emulated bf16 ops", "fp64 ops") priced from the profile whose two
    readings disagree, or a saving under the CPU floor."""
    if readings is not None and not readings.agree:
        return (f"{ops} priced from the profile, loosely",
                (f" Impact unknown; verify to measure: the two readings of the {ops} "
                 f"differ by more than {AGREEMENT:.0%} of their middle "
                 "(metrics/ops/profile_readings.py)."))
    if saving < MIN_PRICED_CPU_S:
        return ("small priced saving on CPU",
                (f" Impact unknown; verify to measure: a CPU saving priced under "
                 f"{MIN_PRICED_CPU_S * 1e3:.2f} ms is not ranked (metrics/noise_floor.py)."))
    return None


def parameter_bytes(ctx: Context) -> int:
    """Bytes of the first rank's root modules' parameters (and buffers), 0 if unknown."""
    if not ctx.run.has("modules"):
        return 0
    row = ctx.run.sql("SELECT sum(param_bytes) FROM modules WHERE depth = 0 "
                      "AND rank = (SELECT min(rank) FROM modules)")
    return int(row[0][0] or 0) if row else 0
