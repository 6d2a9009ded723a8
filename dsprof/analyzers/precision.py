"""Precision analyzer: matmuls and convolutions running in fp32 on a GPU with Tensor Cores.

Example:
    ResNet50 on a V100, fp32: 61 % of kernel time is in convolution and matmul kernels
    launched by fp32 ops. fp16 autocast runs them on Tensor Cores.

Pattern: device kernels are attributed to the innermost matmul/conv op above them (forward
``aten::mm``/``addmm``/``bmm``/``cudnn_convolution``..., backward ``convolution_backward``
and the ``mm`` of ``AddmmBackward0``). The op's dtype (``dtypes`` column: the first tensor
input) says fp32 or low precision; traces recorded without shapes fall back to the kernel name
(``sgemm``/``<float``/``s1688``/``tf32`` vs ``h1688``/``f16``/``bf16``). When low-precision
matmul/conv time is at least a third of all matmul/conv time, AMP is on (autocast casts
matmul inputs, so their dtypes show it): no advice.

Algorithm: the predicted gain is the fp32 matmul/conv time times ``1 - 1/speedup``, minus the
casts autocast adds (1.5 bytes moved per fp32 input byte, at the bandwidth the trace's own
elementwise kernels reach). ``speedup`` is the device's dense low-precision Tensor Core peak
over its fp32 peak (over TF32 when the fp32 kernels already use TF32 Tensor Cores), capped at
4x: small or memory-bound GEMMs and convolutions do not reach the peak ratio.

CPU runs are skipped with the reason: CPU autocast gains depend on AMX/AVX512-BF16 support
that the run does not record, and dsprof does not predict what a GPU would do from a CPU run.
TF32 (``allow_tf32``) advice belongs to the ``tensor_core.*`` findings; this one names bf16
(or fp16 with GradScaler where the GPU has no bf16) and mentions TF32 only as the alternative.
"""

from __future__ import annotations

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.devices import BF16, FP16, FP32, TF32, lookup
from dsprof.findings import Evidence, Finding
from dsprof.metrics.ops.fusion_chains import POINTWISE
from dsprof.metrics.ops.opbytes import LOW_PRECISION, dtypes_of, op_io
from dsprof.metrics.ops.optable import OpTable

_A = "aten::"
MATMUL_CONV = frozenset(_A + n for n in (
    "mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "conv1d", "conv2d", "conv3d",
    "convolution", "_convolution", "cudnn_convolution", "convolution_backward",
    "cudnn_convolution_backward", "cudnn_convolution_backward_input",
    "cudnn_convolution_backward_weight", "_scaled_mm", "addbmm"))

MAX_SPEEDUP = 4.0
AMP_SHARE = 1 / 3
MIN_FP32_SHARE = 0.05


def device_name(ctx: Context) -> str | None:
    return ctx.run.manifest.device_name()


def peaks_of(name: str | None) -> tuple[float, float | None, float, float | None] | None:
    """(fp32, tf32, fp16, bf16) dense TFLOP/s of a device from the one device table; None for
    a device not in it (or without an fp32 or fp16 peak)."""
    peak = lookup(name)
    if peak is None or FP32 not in peak.tflops or FP16 not in peak.tflops:
        return None
    t = peak.tflops
    return t[FP32], t.get(TF32), t[FP16], t.get(BF16)


def _kernel_is_low(name: str) -> bool | None:
    low = name.lower()
    if any(k in low for k in ("bf16", "f16", "h1688", "h16816", "hgemm", "__half", "half",
                              "bfloat16", "fp16")):
        return True
    if any(k in low for k in ("sgemm", "<float", "s1688", "s16816", "tf32", "f32")):
        return False
    return None


def _uses_tf32(name: str) -> bool:
    low = name.lower()
    return "tf32" in low or "s1688" in low or "s16816" in low


class PrecisionAnalyzer(Analyzer):
    name = "precision"
    requires = ("ops",)

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.nonempty("kernels") or not ctx.run.sql(
                "SELECT EXISTS (SELECT 1 FROM kernels WHERE kind = 'compute')")[0][0]:
            return ("the run has no GPU kernels: dsprof predicts autocast gains from Tensor Core "
                    "peaks and does not extrapolate a CPU run to a GPU")
        return None

    def run(self, ctx: Context) -> list[Finding]:
        table = OpTable(ctx)
        parents = {(r, i): (p, n, d) for r, i, p, n, d in ctx.run.sql(
            "SELECT rank, id, parent_id, name, dtypes FROM ops")}
        mm_ids = {(r, i): (sh, d) for r, i, sh, d in ctx.run.sql(
            "SELECT rank, id, input_shapes, dtypes FROM ops WHERE name IN ("
            + ",".join(f"'{n}'" for n in sorted(MATMUL_CONV)) + ")")}
        fp32_s = low_s = total_s = 0.0
        tf32 = 0.0
        fp32_ops: dict[tuple[int, int], float] = {}
        for rank, op_id, kname, dur in ctx.run.sql(f"""
                SELECT k.rank, k.op_id, k.name, k.dur_ns FROM kernels k
                WHERE k.kind = 'compute' {table.steps_filter.replace('o.', 'k.')}"""):
            total_s += dur / 1e9
            node = None if op_id is None else (rank, int(op_id))
            hops = 0
            while node is not None and node in parents and hops < 64:
                parent, name, _ = parents[node]
                if name in MATMUL_CONV:
                    break
                node = None if parent is None else (rank, int(parent))
                hops += 1
            if node is None or node not in parents or parents[node][1] not in MATMUL_CONV:
                continue
            types = dtypes_of(parents[node][2])
            is_low = (types[0] in LOW_PRECISION) if types else _kernel_is_low(kname)
            if is_low is None or (types and types[0] != "float" and not is_low):
                continue
            if is_low:
                low_s += dur / 1e9
            else:
                fp32_s += dur / 1e9
                fp32_ops[node] = fp32_ops.get(node, 0.0) + dur / 1e9
                if _uses_tf32(kname):
                    tf32 += dur / 1e9
        mm_s = fp32_s + low_s
        if mm_s == 0 or total_s == 0 or low_s >= AMP_SHARE * mm_s:
            return []
        if fp32_s < MIN_FP32_SHARE * total_s:
            return []
        name = device_name(ctx)
        peaks = peaks_of(name)
        if peaks is None:
            return []
        bandwidth, _ = table.bandwidth(POINTWISE)
        in_bytes = 0
        for node in fp32_ops:
            io = op_io(*mm_ids.get(node, (None, None)))
            in_bytes += io.in_bytes if io else 0
        return [self._finding(table, name or "", peaks, fp32_s, low_s, total_s,
                              tf32 >= 0.5 * fp32_s, fp32_ops, parents, bandwidth, in_bytes)]

    def _finding(self, table: OpTable, device: str,
                 peaks: tuple[float, float | None, float, float | None], fp32_s: float,
                 low_s: float, total_s: float, on_tf32: bool,
                 fp32_ops: dict[tuple[int, int], float], parents: dict,
                 bandwidth: float | None, in_bytes: int) -> Finding:
        fp32_peak, tf32_peak, fp16_peak, bf16_peak = peaks
        dtype = "bf16" if bf16_peak else "fp16"
        low_peak = bf16_peak or fp16_peak
        base_peak = tf32_peak if on_tf32 and tf32_peak else fp32_peak
        speedup = min(MAX_SPEEDUP, low_peak / base_peak)
        cast_s = 1.5 * in_bytes / bandwidth if bandwidth else 0.0
        steps = table.n_steps
        gain = max(0.0, (fp32_s * (1 - 1 / speedup) - cast_s) / steps)
        share = fp32_s / total_s
        base_txt = "TF32 Tensor Cores" if on_tf32 else "fp32 (no Tensor Cores)"
        top = sorted(fp32_ops.items(), key=lambda kv: -kv[1])[:5]
        evidence = tuple(Evidence(text=f"{parents[n][1]} ({base_txt}): {s / steps * 1e3:.3f} ms "
                                       "per step", rank=n[0], op_ids=(n[1],), value=s / steps)
                         for n, s in top)
        if dtype == "bf16":
            fix = ("with torch.autocast(device_type='cuda', dtype=torch.bfloat16):\n"
                   "    loss = loss_fn(model(x), y)\nloss.backward()")
            apply = {"DS_AUTOCAST": "bf16"}
        else:
            fix = ("scaler = torch.amp.GradScaler('cuda')\n"
                   "with torch.autocast(device_type='cuda', dtype=torch.float16):\n"
                   "    loss = loss_fn(model(x), y)\n"
                   "scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()")
            apply = {}
        alt = "" if on_tf32 or not tf32_peak else (
            " Keeping fp32 numerics but allowing TF32 is the smaller step "
            "(see the tensor_core findings).")
        return Finding(
            analyzer=self.name, kind="precision.fp32_matmul", key=f"{dtype}-autocast",
            title=f"Run the forward pass under {dtype} autocast: {share:.0%} of GPU time is "
                  f"fp32 matmul/conv",
            saving_s=gain, confidence="low",
            explanation=(
                f"On {device}, {fp32_s / steps * 1e3:.2f} ms per step ({share:.0%} of kernel "
                f"time) runs in matmul/conv kernels of fp32 ops on {base_txt}; "
                f"{low_s / steps * 1e3:.2f} ms already runs in fp16/bf16, so AMP is not on. "
                f"{dtype} Tensor Cores peak at {low_peak:g} TFLOPS vs {base_peak:g}; dsprof "
                f"assumes x{speedup:.1f} (capped at x{MAX_SPEEDUP:g}) and subtracts the casts "
                f"autocast adds ({cast_s / steps * 1e3:.2f} ms per step)."
                + ("" if dtype == "bf16" else " This GPU has no bf16: fp16 needs a GradScaler,"
                   " so there is no automatic knob.") + alt),
            evidence=evidence, fix=fix, apply=apply,
            verify="dsprof verify RUN ID" if apply else "",
            data={"device": device, "fp32_s": fp32_s / steps, "low_precision_s": low_s / steps,
                  "kernel_s": total_s / steps, "assumed_speedup": speedup, "tf32": on_tf32})
