"""Findings for matrix math that missed the Tensor Cores: TF32 off, unaligned fp16/bf16 dims,
fp64.

Example: a model trained in fp32 on an A100 with TF32 off spends 60 % of its GPU time in
``ampere_sgemm_*`` kernels; turning TF32 on moves them to ``*_s1688gemm_*`` Tensor Core kernels.

Pattern: ops with FLOPs (mm, addmm, bmm, convolution, attention) whose kernels were not Tensor
Core kernels (or, on a CPU run, would not be on an Ampere-or-newer GPU), grouped by reason; see
:mod:`dsprof.metrics.gpu.tc_eligibility`. Finding kinds:

* ``tensor_core.tf32_off``: fp32 matmuls/convolutions with TF32 off. Fix and knob:
  ``DS_ENABLE_TENSOR_CORE=1`` (``dsprof run --tf32``).
* ``tensor_core.unaligned_dims``: fp16/bf16 ops whose M/N/K (or channels) are not multiples of
  8, one finding per module and op shape.
* ``tensor_core.fp64``: double-precision matrix math. On a GPU run priced as the others; on a
  CPU run the whole fp64 model is slow, not only its matmuls (fp64 has half fp32's SIMD lanes
  and twice its bytes), and :mod:`dsprof.analyzers.cpu_fp64` prices every fp64 op of the
  profiled steps from the run's profile.

Algorithm: the estimated saving per step is the op time that missed the Tensor Cores times
(1 - 1/speedup), with a speedup of 2 (measured TF32 and aligned-fp16 GEMM gains are 2-3x on
A100; the datasheet ratio is 8x), over the number of profiled steps. On a CPU run there is no GPU
time to save: TF32 and alignment findings say what a GPU would do and estimate nothing (saving
0, low confidence; the registry makes them a note). Mixed precision (bf16 autocast) is the
precision analyzer's finding, not this one.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from dsprof.analyzers.cpu_fp64 import FP32_SPEEDUP, CpuFp64Price, factorizations_in_fp64
from dsprof.analyzers.cpu_lowp_model import parameter_bytes
from dsprof.analyzers.frameworks import framework_fix, trl_configs
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.gpu.attribution import flop_ops
from dsprof.metrics.gpu.tc_eligibility import (
    REASON_FP64,
    REASON_TF32_OFF,
    REASON_UNALIGNED,
    Verdict,
    verdicts,
)

SPEEDUP = 2.0

_TF32_FIX = """import torch
torch.backends.cuda.matmul.allow_tf32 = True   # or torch.set_float32_matmul_precision("high")
torch.backends.cudnn.allow_tf32 = True"""


class TensorCoreAnalyzer(Analyzer):
    name = "tensor_cores"
    requires = ("ops",)

    def skip_reason(self, ctx: Context) -> str | None:
        n = ctx.run.sql("SELECT count(*) FROM ops WHERE flops IS NOT NULL")[0][0]
        return None if n else "no op with FLOPs (no matmul/conv shapes recorded)"

    def run(self, ctx: Context) -> list[Finding]:
        ops = flop_ops(ctx.run.con)
        every = verdicts(ops, ctx.meta)
        vs = [v for v in every if not v.tensor_core]
        steps = max(len({(v.rank, v.step) for v in every}), 1)
        out = []
        tf32 = [v for v in vs if v.reason == REASON_TF32_OFF]
        if tf32:
            out.append(self._tf32(ctx, tf32, steps))
        varying = _batch_sized_dims(every)
        groups: dict[tuple[str | None, str, str], list[Verdict]] = defaultdict(list)
        batch_sized = []
        for v in vs:
            if v.reason != REASON_UNALIGNED:
                continue
            if any(d % 8 and (v.module, v.name, k) in varying for k, d in v.dims.items()):
                batch_sized.append(v)
            else:
                groups[(v.module, v.name, _dims_text(v))].append(v)
        if batch_sized:
            out.append(self._batch_sized(ctx, batch_sized, varying, steps))
        out += [self._unaligned(ctx, key, group, steps) for key, group in sorted(
            groups.items(), key=lambda kv: -sum(v.time_ns for v in kv[1]))]
        fp64 = [v for v in vs if v.reason == REASON_FP64]
        if fp64 and (factored := factorizations_in_fp64(ctx)):
            # fp64 on purpose: no "train in fp32" (cpu_fp64.factorizations_in_fp64)
            self.no_finding_reason = (
                f"{len(fp64)} fp64 matmul/conv ops ran beside fp64 matrix factorizations "
                f"({', '.join(factored[:3])}): a model that factors matrices (a Gaussian "
                "process, a solver) keeps fp64 for its numerics, or its library casts to it "
                "(GPyTorch: gpytorch.settings.linalg_dtypes); fp32 is not advised")
        elif fp64:
            out.append(self._fp64(ctx, fp64, steps))
        return [f for f in out if f is not None]

    def _saving(self, ctx: Context, group: list[Verdict], steps: int) -> tuple[float, str]:
        measured = [v for v in group if v.measured]
        if not measured:
            return 0.0, "low"
        per_step = sum(v.time_ns for v in measured) / 1e9 / steps
        return per_step * (1 - 1 / SPEEDUP), "medium"

    def _verify(self, ctx: Context, knob: str = "") -> str:
        cmd = ctx.target_command
        return f"{knob}dsprof run {cmd}" if cmd else "dsprof run YOUR_SCRIPT"

    def _tf32(self, ctx: Context, group: list[Verdict], steps: int) -> Finding:
        saving, confidence = self._saving(ctx, group, steps)
        measured = any(v.measured for v in group)
        ms = sum(v.time_ns for v in group) / 1e6 / steps
        where = ("ran on CUDA cores" if measured
                 else "would run on CUDA cores on an Ampere-or-newer GPU (CPU run: predicted "
                      "from dtypes)")
        return Finding(
            analyzer=self.name, kind="tensor_core.tf32_off", key="tf32",
            title=f"Turn on TF32: {len(group)} fp32 matmul/conv ops per run {where}",
            saving_s=saving, confidence=confidence,
            explanation=(f"{len(group)} fp32 ops with FLOPs ({ms:.2f} ms {ctx.per_step}"
                         f"{' of GPU time' if measured else ' of CPU time'}) {where} because "
                         "TF32 is off. TF32 keeps fp32 storage and runs the matmuls on Tensor "
                         f"Cores; estimate: {SPEEDUP:.0f}x on those kernels."),
            evidence=_evidence(group),
            fix=_TF32_FIX, apply={"DS_ENABLE_TENSOR_CORE": "1"},
            verify=self._verify(ctx, "DS_ENABLE_TENSOR_CORE=1 "),
            data={"ops": len(group), "ms_per_step": ms, "measured": measured})

    def _unaligned(self, ctx: Context, key: tuple[str | None, str, str], group: list[Verdict],
                   steps: int) -> Finding:
        module, name, dims = key
        saving, confidence = self._saving(ctx, group, steps)
        bad = ", ".join(f"{k}={v}" for k, v in group[0].dims.items() if v % 8)
        where = f" in {module}" if module else ""
        return Finding(
            analyzer=self.name, kind="tensor_core.unaligned_dims", key=f"{module}|{name}|{dims}",
            title=f"Pad {bad} to a multiple of 8 for {name}{where} ({group[0].mode})",
            saving_s=saving, confidence=confidence,
            explanation=(f"{len(group)} {group[0].mode} {name} calls{where} with dims {dims}: "
                         f"{bad} not a multiple of 8, so cuBLAS/cuDNN cannot use Tensor Core "
                         "kernels for them (estimate: 2x on those kernels once aligned)."),
            evidence=_evidence(group),
            fix=(f"# round {bad} up to a multiple of 8 (e.g. vocab 50257 -> 50304, or pad the "
                 "hidden size / channels)\nsize = (size + 7) // 8 * 8"),
            verify=self._verify(ctx),
            data={"ops": len(group), "dims": group[0].dims})

    def _batch_sized(self, ctx: Context, group: list[Verdict],
                     varying: set[tuple[str | None, str, str]], steps: int) -> Finding:
        """One finding for the unaligned dims that change from batch to batch (the tokens of
        a dynamically padded or packed batch, a last partial batch): each size is its own
        shape, and a finding per shape and module said the same thing dozens of times (79
        notes for a packed SFT run). The switch is the batch's padding, not a model size."""
        saving, confidence = self._saving(ctx, group, steps)
        values = sorted({d for v in group for k, d in v.dims.items()
                         if d % 8 and (v.module, v.name, k) in varying})
        names = sorted({k for v in group for k, d in v.dims.items()
                        if d % 8 and (v.module, v.name, k) in varying})
        modules = {v.module for v in group}
        shapes = {(v.module, v.name, _dims_text(v)) for v in group}
        sizes = f"{values[0]}" if len(values) == 1 else f"{values[0]} to {values[-1]}"
        trl = trl_configs(ctx)
        switch = (f"# TRL: {trl}(..., pad_to_multiple_of=8)\n" if trl else
                  framework_fix(ctx, "pad_tokens"))
        return Finding(
            analyzer=self.name, kind="tensor_core.unaligned_dims", key="batch_sized",
            title=(f"Pad each batch to a multiple of 8 tokens: {len(group)} {group[0].mode} "
                   f"calls in {len(modules)} module(s) got a batch-sized "
                   f"{'/'.join(names)} of {sizes}"),
            saving_s=saving, confidence=confidence,
            explanation=(f"{len(group)} {group[0].mode} matmul calls in {len(shapes)} shapes "
                         f"had a dim that changes from batch to batch ({'/'.join(names)}: "
                         f"{sizes}, not a multiple of 8): the tokens of a padded-to-longest "
                         "or packed batch, or a last partial batch. cuBLAS cannot use Tensor "
                         "Core kernels for them (estimate: 2x on those kernels once "
                         "aligned); padding each batch to a multiple of 8 aligns them all."),
            evidence=_evidence(group),
            fix=(switch + "# pad every batch's sequence length to a multiple of 8 in its collate "
                 "function (the\n# attention mask and labels with it); a last partial batch: "
                 "DataLoader(..., drop_last=True)"),
            verify=self._verify(ctx),
            data={"ops": len(group), "shapes": len(shapes), "modules": len(modules),
                  "dims": names, "sizes": values[:64]})

    def _fp64(self, ctx: Context, group: list[Verdict], steps: int) -> Finding:
        # the script made fp64 the default: its parameters and inputs are all created so, and
        # model.float() alone would leave the inputs fp64 (a dtype mismatch at the first layer)
        by_default = (ctx.meta.get("precision") or {}).get("default_dtype") == "float64"
        fix = ("torch.set_default_dtype(torch.float32)  # in place of float64: new tensors "
               "and parameters are fp32" if by_default else
               "model = model.float()\nx = torch.as_tensor(array, dtype=torch.float32)")
        cause = ("(the script sets torch.set_default_dtype(torch.float64): every float tensor "
                 "and parameter it creates is fp64, so model.float() alone would leave its "
                 "inputs fp64)." if by_default else
                 "(a .double() or a numpy float64 array turned into a tensor is the usual "
                 "cause).")
        fix = framework_fix(ctx, "fp64_off") + fix
        if not ctx.on_gpu:
            return self._fp64_cpu(ctx, group, steps, fix, cause)
        saving, confidence = self._saving(ctx, group, steps)
        return Finding(
            analyzer=self.name, kind="tensor_core.fp64", key="fp64",
            title=f"Use fp32/bf16 instead of fp64 for {len(group)} matmul/conv ops",
            saving_s=saving, confidence=confidence,
            explanation=("float64 matrix math runs on CUDA cores at 1/2 to 1/64 of the fp32 "
                         "rate; a model rarely needs it " + cause),
            evidence=_evidence(group), fix=fix, verify=self._verify(ctx),
            data={"ops": len(group)})

    def _fp64_cpu(self, ctx: Context, group: list[Verdict], steps: int, fix: str,
                  cause: str) -> Finding:
        """On a CPU the whole fp64 model is slow, not only its matmuls: priced from the
        profile (``cpu_fp64.py``)."""
        price = CpuFp64Price(ctx, steps)
        ms = 1e3
        explanation = (f"{len(group) / price.n:.3g} matmul/conv ops {ctx.per_step} and the ops "
                       f"around them run in float64; a model rarely needs it {cause} "
                       + price.words(ctx, parameter_bytes(ctx)))
        low, high = price.saving_range
        data: dict[str, Any] = {
            "ops": len(group), "fp64_ops_per_step": len(price.ops) / price.n,
            "fp64_profiled_s": price.readings.profiled_s,
            "fp64_scaled_s": price.readings.scaled_s, "fp32_speedup": FP32_SPEEDUP,
            "saving_range_s": [low, high]}
        unranked = price.unranked()
        if unranked:
            data["impact_unknown"], why = unranked
            explanation += why
        return Finding(
            analyzer=self.name, kind="tensor_core.fp64", key="fp64",
            title=(f"Train in fp32, not fp64: the fp64 ops take "
                   f"{price.readings.estimate_s * ms:.3g} ms {ctx.words.a_step}, about "
                   f"{price.saving_s * ms:.3g} ms more than fp32"),
            saving_s=price.saving_s, confidence="medium", explanation=explanation,
            evidence=tuple(price.evidence(ctx.per_step)), fix=fix,
            verify=("paste the fix, run again and compare: dsprof diff RUN NEW_RUN"
                    if ctx.target_command else "re-run the job with the fix, import its "
                    "trace, compare with dsprof diff"),
            data=data)


def _batch_sized_dims(every: list[Verdict]) -> set[tuple[str | None, str, str]]:
    """(module, op, dim) whose size took more than one value over the run while the call's
    other dims stayed the same: a size the batch sets, where a weight's is the same in every
    call. The other dims tell a module's calls apart: its backward's two matmuls name
    different sizes by the same letter (a 128->2 head at a fixed batch of 32: K=2 in the
    input's gradient, K=32 in the weight's), which read as a K that took two values: "pad each
    batch to a multiple of 8 tokens ... a batch-sized K/M of 2" for the 2 outputs."""
    seen: dict[tuple[str | None, str, str, tuple], set[int]] = defaultdict(set)
    for v in every:
        for k, d in v.dims.items():
            rest = tuple(sorted((j, e) for j, e in v.dims.items() if j != k))
            seen[(v.module, v.name, k, rest)].add(d)
    return {key[:3] for key, sizes in seen.items() if len(sizes) > 1}


def _dims_text(v: Verdict) -> str:
    return ",".join(f"{k}={d}" for k, d in v.dims.items())


def _evidence(group: list[Verdict]) -> tuple[Evidence, ...]:
    by_op: dict[tuple[str, str | None, str | None, str], list[Verdict]] = defaultdict(list)
    for v in group:
        by_op[(v.name, v.module, v.phase, _dims_text(v))].append(v)
    rows = sorted(by_op.items(), key=lambda kv: -sum(v.time_ns for v in kv[1]))[:5]
    return tuple(
        Evidence(text=(f"{name} x{len(vs)} {vs[0].mode} {dims or ''} in {module or '?'}, "
                       f"{phase or '?'}: {sum(v.time_ns for v in vs) / 1e6:.2f} ms, "
                       f"{vs[0].reason}"),
                 rank=vs[0].rank, module=module, op_ids=tuple(v.op_id for v in vs[:20]),
                 value=sum(v.time_ns for v in vs) / 1e9)
        for (name, module, phase, dims), vs in rows)
