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

Kernels that no matmul/conv op claims (compiled or graph-launched code, old traces without op
nesting) still count: a kernel the name classifier calls ``gemm`` or ``conv`` is matrix work,
and its name says fp32 or low precision. A trace with no device record gets its GPU family
from the kernel names (``volta_`` -> V100, ``ampere_``/``sm80``/``cutlass_80`` -> A100,
``turing_`` -> T4, ``sm90`` -> H100). Where fp32 matrix kernels hold a real share and still no
finding is made, the analyzer says why (``no_finding_reason``: AMP on, unknown device, ...).

CPU runs are skipped with the reason: CPU autocast gains depend on AMX/AVX512-BF16 support
that the run does not record, and dsprof does not predict what a GPU would do from a CPU run.
(CPU autocast that makes a CPU run slower is the ``cpu_autocast`` analyzer's finding.)
TF32 (``allow_tf32``) advice belongs to the ``tensor_core.*`` findings; this one names bf16
(or fp16 with GradScaler where the GPU has no bf16) and mentions TF32 only as the alternative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

import numpy as np

from dsprof.analyzers.frameworks import framework_fix
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.devices import BF16, FP16, FP32, TF32, lookup
from dsprof.findings import Evidence, Finding
from dsprof.ingest.kernel_class import classify
from dsprof.metrics.ops.fusion_chains import POINTWISE
from dsprof.metrics.ops.opbytes import LOW_PRECISION, dtypes_of, op_io
from dsprof.metrics.ops.optable import OpTable

_A = "aten::"
MATMUL_CONV = frozenset(_A + n for n in (
    "mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "conv1d", "conv2d", "conv3d",
    "convolution", "_convolution", "cudnn_convolution", "convolution_backward",
    "cudnn_convolution_backward", "cudnn_convolution_backward_input",
    "cudnn_convolution_backward_weight", "_scaled_mm", "addbmm"))

MAX_HOPS = 64
"""How far up the op tree a kernel's matmul/conv op is looked for (a guard against a cycle in
a corrupt trace's parent links)."""
MAX_SPEEDUP = 4.0
AMP_SHARE = 1 / 3
MIN_FP32_SHARE = 0.05


# GPU family from kernel-name prefixes, for traces that record no device (oldest first wins
# nothing: the first match in kernel-time order decides).
_FAMILY = (("sm90", "H100"), ("cutlass_90", "H100"), ("ampere_", "A100"), ("sm80", "A100"),
           ("cutlass_80", "A100"), ("volta_", "V100"), ("cutlass_70", "V100"),
           ("turing_", "T4"), ("sm75", "T4"))


def device_name(ctx: Context) -> str | None:
    return ctx.run.manifest.device_name()


def device_from_kernels(ctx: Context) -> str | None:
    """The GPU family the kernel names were built for, e.g. ``V100 (from kernel names)``."""
    for (name,) in ctx.run.sql("SELECT name FROM kernels WHERE kind = 'compute' "
                               "GROUP BY name ORDER BY sum(dur_ns) DESC, name LIMIT 200"):
        low = str(name).lower()
        for prefix, family in _FAMILY:
            if prefix in low:
                return f"{family} (from kernel names)"
    return None


def peaks_of(name: str | None) -> tuple[float, float | None, float, float | None] | None:
    """(fp32, tf32, fp16, bf16) dense TFLOP/s of a device from the one device table; None for
    a device not in it (or without an fp32 or fp16 peak)."""
    peak = lookup(name)
    if peak is None or FP32 not in peak.tflops or FP16 not in peak.tflops:
        return None
    t = peak.tflops
    return t[FP32], t.get(TF32), t[FP16], t.get(BF16)


# Per kernel name, not per launch: classifying names was most of this analyzer's time on traces
# where many kernels have no matmul/conv op above them (hundreds of names, thousands of
# launches). The functions are pure, so a cache keyed by the name changes no result.
_classify = lru_cache(maxsize=8192)(classify)


@lru_cache(maxsize=8192)
def _kernel_is_low(name: str) -> bool | None:
    low = name.lower()
    if any(k in low for k in ("bf16", "f16", "h1688", "h16816", "hgemm", "__half", "half",
                              "bfloat16", "fp16")):
        return True
    if any(k in low for k in ("sgemm", "<float", "s1688", "s16816", "tf32", "f32")):
        return False
    return None


def _kernels_with_matmul_op(ctx: Context, steps_filter: str, max_hops: int
                            ) -> list[tuple[int, str, int, tuple[int, int] | None]]:
    """Each compute kernel (in the profiled steps) as (rank, name, dur_ns, and the (rank, id)
    of the innermost matmul/conv op at or above its op, or None), in the kernels' scan order.

    The walk up the op tree is vectorised: all kernels climb one parent per numpy pass (at
    most ``max_hops`` + 1 passes). It replaced a Python dict of every op (rank, id, parent,
    name, dtypes) walked per kernel, which was this analyzer's largest cost and grew with the
    ranks (0.25 s of 0.35 s on 8 ranks of 40k events). A kernel's chain stops at the first
    matmul/conv op, at a missing op or parent, or after ``max_hops`` steps up (the op
    ``max_hops`` above is still looked at).
    """
    names = ",".join(f"'{n}'" for n in sorted(MATMUL_CONV))
    ops = ctx.run.con.execute(
        f"SELECT rank, id, coalesce(parent_id, -1) AS parent_id, "
        f"parent_id IS NOT NULL AS has_parent, name IN ({names}) AS is_mm FROM ops").fetchnumpy()
    kern = ctx.run.arrow(f"SELECT k.rank, k.op_id, k.name, k.dur_ns FROM kernels k "
                         f"WHERE k.kind = 'compute' {steps_filter}")
    o_rank = np.asarray(ops["rank"], np.int64)
    o_id = np.asarray(ops["id"], np.int64)
    p_id = np.asarray(ops["parent_id"], np.int64)
    p_valid = np.asarray(ops["has_parent"], bool)
    is_mm = np.asarray(ops["is_mm"], bool)
    k_rank_list = kern["rank"].to_pylist()
    k_rank = np.asarray(k_rank_list, np.int64)
    k_valid = kern["op_id"].is_valid().to_numpy(zero_copy_only=False)
    k_id = np.asarray(kern["op_id"].fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    # row of the op with key (rank, id), or -1: the pairs as one sortable integer
    encode = _pair_encoder(np.concatenate([o_rank, k_rank]), np.concatenate([o_id, p_id, k_id]))
    o_key = encode(o_rank, o_id)
    order = np.argsort(o_key, kind="stable")
    sorted_keys = o_key[order]

    def row_of(keys: np.ndarray) -> np.ndarray:
        at = np.searchsorted(sorted_keys, keys, side="right") - 1  # the last op of that key
        hit = (at >= 0) & (sorted_keys[np.clip(at, 0, None)] == keys) if len(sorted_keys) \
            else np.zeros(len(keys), bool)
        return np.where(hit, order[np.clip(at, 0, None)] if len(order) else -1, -1)

    parent_row = np.where(p_valid, row_of(encode(o_rank, p_id)), -1)
    cur = np.where(k_valid, row_of(encode(k_rank, k_id)), -1)
    matched = np.full(len(cur), -1, np.int64)
    active = cur >= 0
    for hop in range(max_hops + 1):
        idx = np.flatnonzero(active)
        if not idx.size:
            break
        rows = cur[idx]
        mm = is_mm[rows]
        matched[idx[mm]] = rows[mm]
        active[idx[mm]] = False
        if hop == max_hops:
            break
        up = parent_row[rows[~mm]]
        cur[idx[~mm]] = up
        active[idx[~mm]] = up >= 0
    o_rank_list, o_id_list = o_rank.tolist(), o_id.tolist()
    return [(r, n, d, None if m < 0 else (o_rank_list[m], o_id_list[m]))
            for r, n, d, m in zip(k_rank_list, kern["name"].to_pylist(),
                                  kern["dur_ns"].to_pylist(), matched.tolist())]


def _pair_encoder(ranks: np.ndarray, ids: np.ndarray
                  ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function mapping (rank, id) arrays to int64 keys that are equal exactly when both
    are: rank times the ids' range plus the id, when that fits (ingest numbers a rank's ops
    from 0, so it always does for dsprof's tables); else a number per distinct pair, counted
    in a dict (exact, slower; for ids from elsewhere)."""
    lo = int(ids.min()) if ids.size else 0
    span = int(ids.max()) - lo + 1 if ids.size else 1
    if (not ranks.size or int(ranks.min()) >= 0) and (int(ranks.max()) + 1 if ranks.size
                                                       else 1) * span < 2**62:
        return lambda r, i: r * span + (i - lo)
    codes: dict[tuple[int, int], int] = {}

    def by_pairs(r: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.array([codes.setdefault(p, len(codes)) for p in zip(r.tolist(), i.tolist())],
                        np.int64)

    return by_pairs


@lru_cache(maxsize=8192)
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
        table = ctx.op_table
        mm_ops = {(r, i): (sh, d, n) for r, i, sh, d, n in ctx.run.sql(
            "SELECT rank, id, input_shapes, dtypes, name FROM ops WHERE name IN ("
            + ",".join(f"'{n}'" for n in sorted(MATMUL_CONV)) + ")")}
        self.no_finding_reason = None
        fp32_s = low_s = total_s = unattributed_s = 0.0
        tf32 = 0.0
        fp32_ops: dict[tuple[int, int], float] = {}
        # (rank, op id) -> (parent, name, dtypes) of the matmul/conv ops kernels resolve to
        parents: dict[tuple[int, int], tuple[int | None, str, str | None]] = {}
        for rank, kname, dur, node in _kernels_with_matmul_op(
                ctx, table.steps_filter.replace("o.", "k."), MAX_HOPS):
            total_s += dur / 1e9
            if node is None:
                # no matmul/conv op above it: the kernel's own name says if it is matrix work
                category, tensor_core = _classify(kname)
                if category not in ("gemm", "conv"):
                    continue
                is_low = _kernel_is_low(kname)
                if is_low is None:
                    is_low = False if tensor_core is False else None
                if is_low is None:
                    continue
                key = (rank, -1)  # unattributed matrix kernels, one bucket per rank
                if is_low:
                    low_s += dur / 1e9
                else:
                    fp32_s += dur / 1e9
                    unattributed_s += dur / 1e9
                    fp32_ops[key] = fp32_ops.get(key, 0.0) + dur / 1e9
                    if _uses_tf32(kname):
                        tf32 += dur / 1e9
                continue
            _shapes, mm_dtypes, mm_name = mm_ops[node]
            parents[node] = (None, mm_name, mm_dtypes)
            types = dtypes_of(mm_dtypes)
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
        if mm_s == 0 or total_s == 0:
            self.no_finding_reason = "no matmul/conv kernel time in the trace"
            return []
        if low_s >= AMP_SHARE * mm_s:
            self.no_finding_reason = (f"mixed precision is on: {low_s / mm_s:.0%} of matmul/conv "
                                      "kernel time already runs in fp16/bf16")
            return []
        if fp32_s < MIN_FP32_SHARE * total_s:
            self.no_finding_reason = (f"fp32 matmul/conv kernels are {fp32_s / total_s:.1%} of "
                                      f"kernel time, under {MIN_FP32_SHARE:.0%}")
            return []
        name = device_name(ctx) or device_from_kernels(ctx)
        peaks = peaks_of(name)
        if peaks is None:
            self.no_finding_reason = (
                f"fp32 matmul/conv kernels are {fp32_s / total_s:.0%} of kernel time, but the "
                f"device ({name or 'not recorded'}) is not in dsprof's table of Tensor Core "
                "peaks, so no gain can be estimated")
            return []
        bandwidth, _ = table.bandwidth(POINTWISE)
        in_bytes = 0
        for node in fp32_ops:
            io = op_io(*mm_ops.get(node, (None, None, None))[:2])
            in_bytes += io.in_bytes if io else 0
        label = "matrix kernels with no matmul/conv op (compiled, graph-launched or an old trace)"
        parents = {**parents, **{(r, -1): (None, label, None) for r, i in fp32_ops if i == -1}}
        found = self._finding(ctx, table, name or "", peaks, fp32_s, low_s, total_s,
                              tf32 >= 0.5 * fp32_s, fp32_ops, parents, bandwidth, in_bytes)
        found.data["unattributed_fp32_s"] = unattributed_s / table.n_steps
        switch = framework_fix(ctx, "precision")
        return [replace(found, fix=switch + found.fix) if switch else found]

    def _finding(self, ctx: Context, table: OpTable, device: str,
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
        per = ctx.per_step  # a trace that marks no steps: totals over the capture
        gain = max(0.0, (fp32_s * (1 - 1 / speedup) - cast_s) / steps)
        share = fp32_s / total_s
        base_txt = "TF32 Tensor Cores" if on_tf32 else "fp32 (no Tensor Cores)"
        top = sorted(fp32_ops.items(), key=lambda kv: -kv[1])[:5]
        evidence = tuple(Evidence(text=f"{parents[n][1]} ({base_txt}): {s / steps * 1e3:.3f} ms "
                                       f"{per}", rank=n[0], op_ids=(n[1],) if n[1] >= 0 else (),
                                  value=s / steps)
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
                f"On {device}, {fp32_s / steps * 1e3:.2f} ms {per} ({share:.0%} of kernel "
                f"time) runs in matmul/conv kernels of fp32 ops on {base_txt}; "
                f"{low_s / steps * 1e3:.2f} ms already runs in fp16/bf16, so AMP is not on. "
                f"{dtype} Tensor Cores peak at {low_peak:g} TFLOPS vs {base_peak:g}; dsprof "
                f"assumes x{speedup:.1f} (capped at x{MAX_SPEEDUP:g}) and subtracts the casts "
                f"autocast adds ({cast_s / steps * 1e3:.2f} ms {per})."
                + ("" if dtype == "bf16" else " This GPU has no bf16: fp16 needs a GradScaler,"
                   " so there is no automatic knob.") + alt),
            evidence=evidence, fix=fix, apply=apply,
            # an imported trace has no command for verify to rerun
            verify=("" if not apply else "dsprof verify {run} {id}" if ctx.target_command
                    else "re-run the job with the fix, import its trace, compare with dsprof "
                         "diff"),
            data={"device": device, "fp32_s": fp32_s / steps, "low_precision_s": low_s / steps,
                  "kernel_s": total_s / steps, "assumed_speedup": speedup, "tf32": on_tf32})
