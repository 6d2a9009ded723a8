"""CPU autocast analyzer: bf16 autocast that makes a CPU training step slower than fp32.

Example:
    an MLP 64->256->256->10 at batch 32 on one thread of a Xeon with AMX took 0.89-0.92 ms a
    step in fp32 and 1.08-1.12 ms under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
    Autocast casts every weight (and the activations going in) to bf16 each forward and the
    gradients back to fp32 in backward; at these sizes the casts and oneDNN's bf16 call cost
    (~18 us a GEMM) exceed what bf16 math saves. At large sizes bf16 on AMX wins 4-6x.

Pattern (tables only: ``ops`` with shapes and dtypes, phases): the cast ops autocast inserts
are ``aten::_to_copy`` of fp32 or bf16/fp16 tensors in forward and backward (with their
``aten::to`` and ``ToCopyBackward0`` wrappers, taken as one cast: the wrappers go with it);
the low-precision GEMMs are the matmul/convolution ops that carry FLOPs with a bf16/fp16 first
input. Autocast ran when forward casts of fp32 tensors number at least half the forward
low-precision GEMMs (it casts each weight once a forward; a model cast to bf16 as a whole
casts only its input).

Algorithm: the saving of turning autocast off is the casts plus the bf16 GEMMs less the same
GEMMs in fp32, all priced at full speed from shapes and FLOPs
(``metrics/ops/autocast_cost.py``; profiled casts and bf16 GEMMs are inflated, large ones
several times over, so their profiled times are shown as evidence only), when positive; where
bf16 pays (large GEMMs) there is none and ``skipped`` says so. A priced thread-CPU saving
(``saving_clock: "thread_cpu"``) under ``MIN_PRICED_CPU_S`` (``metrics/noise_floor.py``) is
kept unranked ("impact unknown; verify to measure"), and the registry's noise band holds the
rest. A CPU without AVX512-BF16 or AMX (meta.json ``precision.cpu_bf16`` is ``none``) runs
bf16 emulated, 5-60x slower than fp32, where AMX's prices mean nothing: there the bf16 ops are
priced from the run's profile (``metrics/ops/emulated_bf16.py``, two readings; unranked where
they disagree), the title says bf16 is emulated, and "bf16 pays here" is never said.
An fp16 autocast run (most low-precision GEMMs ``c10::Half``) on a CPU with AVX512-FP16 and
no AMX-FP16 (``precision.cpu_fp16`` is ``avx512_fp16``) is priced from shapes with fp16's own
prices, which never beat fp32 there, except its convolutions' backward, a reference kernel
priced from its profiled time (its pace moves with the shape and what runs around it); on
AMX-FP16 (``amx``, not calibrated) it is skipped with that reason; where fp16 is emulated
(``none``) it is priced from the profile as emulated bf16 is, in fp16's words, with fp16's
switches.

GPU runs are skipped: the ``precision`` analyzer prices GPU autocast.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from dsprof.analyzers.cpu_lowp_model import (
    HARDWARE,
    emulated_model_finding,
    gemm_evidence,
    readings_words,
    unranked_why,
)
from dsprof.analyzers.frameworks import framework_fix
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import SAVING_CLOCK, THREAD_CPU, Evidence, Finding
from dsprof.metrics.ops.autocast_cost import (
    CONV_BWD_OPS,
    PRICED_OPS,
    SDPA_OPS,
    bf16_seconds,
    cast_seconds,
    elements,
    fp16_seconds,
    fp32_seconds,
    sdpa_fp32_seconds,
)
from dsprof.metrics.ops.emulated_bf16 import emulated_bf16_seconds
from dsprof.metrics.ops.opbytes import dtypes_of
from dsprof.metrics.ops.profile_readings import ProfileReadings, profile_readings

LOW = ("c10::BFloat16", "c10::Half")
CAST_OP = "aten::_to_copy"
# What wraps one cast: aten::to calls _to_copy; in backward the autograd node of the cast
_CAST_WRAPPERS = ("aten::to", "ToCopyBackward0",
                  "autograd::engine::evaluate_function: ToCopyBackward0")
MIN_CAST_SHARE = 0.5
"""Forward casts of fp32 tensors per forward low-precision GEMM for autocast to count as on."""

_PLAIN_FIX = (
    "# plain PyTorch: run the forward in fp32 (delete the autocast block, or switch it off)\n"
    "with torch.autocast(\"cpu\", dtype=torch.{dtype}, enabled=False):\n"
    "    loss = loss_fn(model(x), y)")
_TORCH_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}
# the CPU the low precision's prices were fitted on (metrics/ops/autocast_cost.py)
_CALIBRATED_ON = {"bf16": "AMX", "fp16": "AVX512-FP16 and no AMX-FP16"}
_WHERE_IT_PAYS = {
    "bf16": (" bf16 pays on AMX/AVX512-BF16 for large matmuls (128x512 @ 512x512 ran 4x "
             "faster than fp32 on the calibration machine), so growing the batch or width "
             "is the other way out."),
    "fp16": (" fp16 does not pay at any size on a CPU with AVX512-FP16 and no AMX-FP16: on the "
             "calibration machine its matmuls ran at fp32's speed at best (512x2048 @ "
             "2048x2048: 29.0 ms against 29.9) and its convolutions' backward in a reference "
             "kernel (32x16x32x32 -> 32, 3x3: 823 ms against 6.6 in fp32)."),
}


def _name_list(names: Any) -> str:
    return ",".join(f"'{n}'" for n in sorted(names))


class CpuAutocastAnalyzer(Analyzer):
    name = "cpu_autocast"
    requires = ("ops",)
    compiled_casts = 0  # the last run's forward ops cast inside compiled graphs
    low_name = "bf16"  # the last run's low precision: bf16, or fp16 where most GEMMs are

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.on_gpu:
            return "a GPU run: the precision analyzer prices autocast on GPUs"
        return None

    def run(self, ctx: Context) -> list[Finding]:
        self.no_finding_reason: str | None = None
        steps = ("AND step IN (SELECT s.step FROM steps s WHERE s.profiled AND s.rank = o.rank)"
                 if ctx.profiled_steps else "")
        gemms = ctx.run.sql(
            f"SELECT rank, id, name, phase, module, input_shapes, dtypes, dur_ns, flops "
            f"FROM ops o WHERE flops > 0 AND name IN ({_name_list(PRICED_OPS)}) "
            f"AND phase IN ('forward', 'backward') {steps}")
        low = [g for g in gemms if (dtypes_of(g[6]) or [""])[0] in LOW]
        if not low:
            self.no_finding_reason = "no bf16/fp16 matmul or convolution ran"
            return []
        half = sum(1 for g in low if (dtypes_of(g[6]) or [""])[0] == "c10::Half")
        precision = ctx.meta.get("precision") or {}
        self.low_name = "fp16" if 2 * half > len(low) else "bf16"
        isa = precision.get(f"cpu_{self.low_name}")
        if self.low_name == "fp16" and isa not in ("none", "avx512_fp16"):
            # fp16's shape prices are AVX512-FP16's; AMX-FP16 tiles run other kernels, many
            # times faster on large matmuls (and a run recorded before cpu_fp16 says neither).
            # (Emulated fp16 is priced from the profile, as emulated bf16 is.)
            self.no_finding_reason = (
                f"fp16 autocast: {half} fp16 matmul/conv ops, but dsprof's CPU fp16 prices are "
                "AVX512-FP16's (metrics/ops/autocast_cost.py), not AMX-FP16's; whether fp32 is "
                "faster here is for a run with the autocast block switched off to measure")
            return []
        casts = self._casts(ctx, steps)
        fwd_fp32_casts = sum(1 for c in casts if c["phase"] == "forward" and c["from"] == "float")
        fwd_low = sum(1 for g in low if g[3] == "forward")
        self.compiled_casts = 0
        if fwd_fp32_casts < max(1.0, MIN_CAST_SHARE * fwd_low):
            # under torch.compile the casts are inside inductor's kernels, unrecorded
            self.compiled_casts = self._compiled_from_fp32(ctx, steps)
            fwd_fp32_casts += self.compiled_casts
        n = len(ctx.profiled_steps) or max(1, len({(r[0], r[1]) for r in ctx.run.sql(
            f"SELECT DISTINCT rank, step FROM ops o WHERE phase = 'forward' {steps}")}))
        if fwd_fp32_casts < max(1.0, MIN_CAST_SHARE * fwd_low):
            self.no_finding_reason = (
                f"{fwd_low} forward bf16/fp16 matmul/conv ops but {fwd_fp32_casts} casts of fp32 "
                "tensors in forward: the model itself runs in low precision, not under autocast")
            # nothing to turn off; on a CPU that emulates that precision, its dtype is the fix
            model = (emulated_model_finding(ctx, self.low_name, low, n, self.name)
                     if isa == "none" else None)
            return [model] if model else []
        # priced from shapes at full speed (autocast_cost.py: profiled casts and bf16 GEMMs
        # are inflated, the large ones several times over); the profiled times are evidence
        cast_s = sum(cast_seconds(c["phase"], elements(c["shape"])) for c in casts) / n
        emulated = None
        if isa == "none":
            # AMX's prices are 5-60x too low for emulated bf16/fp16: what the run measured
            emulated = emulated_bf16_seconds(ctx, low, n)
            priced = [(g, g[7] / 1e9, fp32_seconds(g[2], int(g[8]), g[5]) or 0.0) for g in low]
        else:
            priced = [(g, self._low_seconds(g), fp32_seconds(g[2], int(g[8]), g[5]) or 0.0)
                      for g in low]
        low_s = emulated.estimate_s if emulated else sum(b for _, b, _ in priced) / n
        fp32_s = sum(f for _, _, f in priced) / n
        # attention's CPU flash kernels, whose bf16 backward costs far more than fp32's at
        # small sizes: profiled in bf16, priced in fp32 (autocast_cost.py)
        attention = self._attention(ctx, steps)
        # (profiled: between that and it scaled by the full-speed step over the profiled one)
        attn_low = (profile_readings(ctx, sum(b for _, b, _ in attention) / n).estimate_s
                    if attention else 0.0)
        self.attention = (len(attention), attn_low, sum(f for _, _, f in attention) / n)
        low_s += self.attention[1]
        fp32_s += self.attention[2]
        saving = cast_s + low_s - fp32_s
        if saving <= 0:
            self.no_finding_reason = (
                f"the emulated {self.low_name} matmul/conv ops took {low_s * 1e3:.3g} ms "
                f"{ctx.per_step} "
                f"(from the profile), less than the {fp32_s * 1e3:.3g} ms they are priced in "
                f"fp32 less the {cast_s * 1e3:.3g} ms of casts autocast adds" if emulated else
                f"{self.low_name} pays here: its matmul/conv ops"
                + (" and attention" if attention else "")
                + f", priced {low_s * 1e3:.3g} ms "
                f"{ctx.per_step} in {self.low_name}, would take {fp32_s * 1e3:.3g} ms in fp32, more than "
                f"the {cast_s * 1e3:.3g} ms of casts autocast adds")
            return []
        return [self._finding(ctx, n, casts, priced, cast_s, low_s, fp32_s, saving, isa,
                              emulated)]

    def _low_seconds(self, g: Any) -> float:
        """A low-precision GEMM at full speed: bf16's and fp16's prices from its shape; an fp16
        convolution's backward (a reference kernel on AVX512-FP16: milliseconds a call, where
        the profiler's own cost is small, and 0.3-0.8 GFLOP/s by the shape and what runs
        around it) its profiled time."""
        if self.low_name == "fp16":
            if g[2] in CONV_BWD_OPS:
                return int(g[7] or 0) / 1e9
            return fp16_seconds(g[2], int(g[8]), g[5]) or 0.0
        return bf16_seconds(g[2], int(g[8]), g[5]) or 0.0

    def _compiled_from_fp32(self, ctx: Context, steps: str) -> int:
        """Forward bf16/fp16 matmul/conv ops inside a compiled graph (``CompiledFunction``)
        whose inputs are all fp32: the graph casts them (autocast compiled in; a bf16 model's
        graph takes bf16 parameters). Each counts as a forward cast of an fp32 tensor."""
        low = " OR ".join(f"o.dtypes LIKE '[\"{t}\"%'" for t in LOW)
        row = ctx.run.sql(
            f"SELECT count(*) FROM ops o JOIN ops c ON c.rank = o.rank AND c.thread = o.thread "
            f"AND c.name = 'CompiledFunction' AND o.start_ns >= c.start_ns "
            f"AND o.start_ns < c.start_ns + c.dur_ns "
            f"WHERE o.flops > 0 AND o.phase = 'forward' AND o.name IN ({_name_list(PRICED_OPS)}) "
            f"AND ({low}) AND c.dtypes LIKE '%\"float\"%' AND c.dtypes NOT LIKE '%BFloat16%' "
            f"AND c.dtypes NOT LIKE '%Half%' {steps.replace('AND step IN', 'AND o.step IN')}")
        return int(row[0][0] or 0)

    def _attention(self, ctx: Context, steps: str) -> list[tuple[Any, float, float]]:
        """The low-precision CPU flash-attention ops, as ``(op row, profiled seconds, fp32
        seconds)``."""
        rows = ctx.run.sql(
            f"SELECT rank, id, name, phase, module, input_shapes, dtypes, dur_ns, 0 "
            f"FROM ops o WHERE name IN ({_name_list(SDPA_OPS)}) "
            f"AND phase IN ('forward', 'backward') {steps}")
        out = []
        for g in rows:
            fp32 = sdpa_fp32_seconds(g[2], g[5])
            if (dtypes_of(g[6]) or [""])[0] in LOW and fp32 is not None:
                out.append((g, int(g[7] or 0) / 1e9, fp32))
        return out

    def _casts(self, ctx: Context, steps: str) -> list[dict[str, Any]]:
        """Each cast of a floating tensor in forward or backward, as its outermost wrapper:
        phase, module, the source dtype, its input shapes and profiled seconds."""
        rows = ctx.run.sql(
            f"SELECT rank, id, parent_id, name, phase, module, input_shapes, dtypes, dur_ns "
            f"FROM ops o WHERE name IN ({_name_list((CAST_OP, *_CAST_WRAPPERS))}) "
            f"AND phase IN ('forward', 'backward') {steps}")
        by_key = {(r[0], r[1]): r for r in rows}
        out = []
        for r in rows:
            if r[3] != CAST_OP:
                continue
            types = dtypes_of(r[7])
            source = types[0] if types else ""
            if source not in ("float", *LOW) or r[6] is None or r[6].startswith("[[]"):
                continue  # a scalar (the optimizer's step counts) or an integer tensor
            top = r
            while top[2] is not None and (top[0], top[2]) in by_key \
                    and by_key[(top[0], top[2])][3] in _CAST_WRAPPERS:
                top = by_key[(top[0], top[2])]
            out.append({"phase": r[4], "module": r[5] or top[5], "from": source,
                        "shape": r[6], "dur_s": top[8] / 1e9, "rank": r[0], "id": top[1]})
        return out

    def _finding(self, ctx: Context, n: int, casts: list[dict[str, Any]],
                 priced: list[tuple[Any, float, float]], cast_s: float, low_s: float, fp32_s: float,
                 saving: float, isa: str | None,
                 emulated: ProfileReadings | None = None) -> Finding:
        w = ctx.words
        lo = self.low_name
        ms = 1e3
        by_module: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        for c in casts:
            slot = by_module[f"{c['module'] or '(outside modules)'}, {c['phase']}"]
            slot[0] += 1
            slot[1] += c["dur_s"]
        top_casts = sorted(by_module.items(), key=lambda kv: -kv[1][1])[:2]
        evidence = [Evidence(
            text=f"{len(casts) / n:.0f} casts (aten::_to_copy fp32<->{lo}) {w.per_step}: priced "
                 f"{cast_s * ms:.3f} ms at full speed", value=cast_s)]
        evidence += [Evidence(text=f"casts in {where}: {cnt / n:.0f} {w.per_step}, "
                                   f"{dur / n * ms:.3f} ms profiled", module=where.split(",")[0],
                              value=dur / n)
                     for where, (cnt, dur) in top_casts]
        evidence += gemm_evidence(priced, n, lo, emulated is not None)
        step = ctx.run.facts.step.median_s  # the measured step (the mean holds outliers)
        where = _WHERE_IT_PAYS[lo]
        attn_n, attn_low, attn_fp32 = getattr(self, "attention", (0, 0.0, 0.0))
        title = (f"Turn {lo} autocast off: {lo} is emulated on this CPU and costs "
                 f"{saving * ms:.3g} ms {w.a_step}" if emulated is not None else
                 f"Turn {lo} autocast off: its casts, "
                 + ("small bf16 matmuls" if lo == "bf16" else "fp16 matmuls and convolutions")
                 + (f" and {lo} attention" if attn_n else "")
                 + f" cost {saving * ms:.3g} ms {w.a_step} more than fp32")
        if attn_n:
            evidence.append(Evidence(
                text=(f"{attn_n / n:.0f} {lo} attention ops (CPU flash attention) {w.per_step}: "
                      f"{attn_low * ms:.3f} ms profiled, priced {attn_fp32 * ms:.3f} ms in fp32"),
                value=attn_low - attn_fp32))
        explanation = (
            f"Autocast ran {len(casts) / n:.0f} casts {w.per_step} ({cast_s * ms:.3f} ms) around "
            f"{len(priced) / n:.0f} {lo} matmul/conv ops"
            + (f" and {attn_n / n:.0f} attention ops ({attn_low * ms:.3f} ms of it, read from "
               f"the profile: {lo}'s CPU flash-attention backward is slow at small sizes)"
               if attn_n else "")
            + f" ({low_s * ms:.3f} ms); in fp32 those "
            f"ops take {fp32_s * ms:.3f} ms and need no casts (all priced at full speed from "
            "shapes and FLOPs, per call and per element or FLOP as calibrated on a Xeon with "
            f"{_CALIBRATED_ON[lo]}: metrics/ops/autocast_cost.py)"
            + (f", so the step would go from {step * ms:.3f} to about "
               f"{(step - saving) * ms:.3f} ms." if step else ".") + where
            if emulated is None else _emulated_explanation(
                w, lo, n, len(casts), len(priced), cast_s, fp32_s, saving, step, emulated))
        data: dict[str, Any] = {
            "cast_s": cast_s, "casts_per_step": len(casts) / n, "bf16_gemm_s": low_s,
            "fp32_priced_s": fp32_s, f"cpu_{lo}": isa, SAVING_CLOCK: THREAD_CPU,
            "low_precision": lo,
            "fp32_step_s": (step - saving) if step else None,
            "bf16_priced_from": "profile" if emulated else "shapes"}
        compiled = self.compiled_casts
        if compiled:
            data["compiled_cast_ops_per_step"] = compiled / n
            explanation += (
                f" Under torch.compile the casts run inside the compiled graph: "
                f"{compiled / n:.0f} {lo} matmul/conv ops {w.per_step} take a graph's fp32 "
                "inputs, cast in inductor's kernels, which the profile does not show apart "
                "(those casts are not priced).")
        if emulated is not None:
            data["saving_range_s"] = emulated.saving_range(saving)
            data["bf16_profiled_s"] = emulated.profiled_s
            data["bf16_scaled_s"] = emulated.scaled_s
        unranked = unranked_why(emulated, saving, f"emulated {lo} ops")
        if unranked:
            data["impact_unknown"], why = unranked
            explanation += why
        fix = (framework_fix(ctx, "autocast_off" if lo == "bf16" else "autocast_off_fp16")
               + _PLAIN_FIX.format(dtype=_TORCH_DTYPE[lo]))
        return Finding(
            analyzer=self.name, kind="precision.cpu_autocast_slower", key=f"cpu-{lo}-autocast",
            title=title, saving_s=saving, confidence="low", explanation=explanation,
            evidence=tuple(evidence), fix=fix, apply={"DS_AUTOCAST": "off"},
            verify=("dsprof verify {run} {id}" if ctx.target_command else
                    "re-run the job with autocast off, import its trace, compare with dsprof "
                    "diff"),
            data=data)


def _emulated_explanation(w: Any, lo: str, n: int, casts: int, gemms: int, cast_s: float,
                          fp32_s: float, saving: float, step: float | None,
                          emulated: ProfileReadings) -> str:
    """Why a CPU that emulates ``lo`` (bf16, fp16) is priced from the run's profile, and the
    two readings."""
    ms = 1e3
    low, high = emulated.saving_range(saving)
    return (
        f"This CPU has neither {HARDWARE[lo]}: its {gemms / n:.0f} {lo} matmul/conv ops "
        f"{w.per_step} run PyTorch's emulated kernels (converted element by element), slower "
        f"than fp32 at any size, so {lo} cannot pay on it and AMX's bf16 prices do not apply. "
        f"They are priced from this run: {readings_words(emulated, w.per_step)}. In fp32 "
        "they take about "
        f"{fp32_s * ms:.3f} ms (priced at full speed from shapes and FLOPs as calibrated on a "
        f"Xeon: metrics/ops/autocast_cost.py) and need none of the {casts / n:.0f} casts "
        f"({cast_s * ms:.3f} ms)"
        + (f", so the step would go from {step * ms:.3f} to about {(step - saving) * ms:.3f} ms"
           if step else "")
        + f" (saving {low * ms:.3g}-{high * ms:.3g} ms by the two readings).")
