"""What CPU bf16/fp16 autocast costs and what fp32 would: casts, bf16, fp16 and fp32
matmuls/convs.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` a run records its matmuls and
convolutions in bf16 only. Turning autocast off removes its casts and runs those ops in fp32.
All three are priced from shapes and FLOPs (the ``flops`` column), never from profiled op
times: under the profiler a cast of a 1024x1024 weight took 0.75 ms forward and 1.05 ms
backward against 0.23 ms unprofiled, and a run's casts and bf16 GEMMs summed to more than its
whole full-speed step (``benchmarks/cpu_autocast.py`` printed the profiled figures over-predicting
the change by 64-70 % at 32x64 and 32x256, and with the wrong sign at 32x1024). The costs are
per call plus per element or FLOP, fitted on this project's machine (Intel Xeon with AMX and
AVX512-BF16, one thread, torch 2.13, thread CPU time at full speed; the per-op figures:
``benchmarks/cpu_autocast.py --calibrate``):

- a cast (``aten::_to_copy`` fp32 <-> bf16): 8 us a call forward, 10 us backward, + 0.2 ns an
  element (a 256x256 weight 11 us, 1024x1024 228-234 us). Alone a forward cast costs 2.5 us a
  call; in training it also builds its autograd node, and the backward one runs in the
  engine: the call costs are fitted to the end-to-end differences of the benchmark's small
  MLPs (2.5 and 5 us under-priced them by 0.08-0.15 ms a step, 15 casts);
- a bf16 ``addmm``/``mm``: 22 us a call (oneDNN's bf16 path; 32x256 @ 256x10 took 23 us, where
  fp32 took 5) + FLOPs at 1.1 TFLOP/s + 0.13 ns per element of the second operand (its
  packing: 32x1024 @ 1024x1024 took 200-215 us, 128x512 @ 512x512 98); under 64 kFLOP torch
  keeps its own kernel (4x64 @ 64x10: 3.5 us), priced like fp32;
- a bf16 convolution: 65 us a call + FLOPs at 300 GFLOP/s forward; 170 us + FLOPs at 430
  GFLOP/s backward (4x3x16x16 -> 16: 72 us forward, 179 backward).

And in fp32:

- ``aten::addmm`` / ``aten::mm`` / ``aten::bmm`` (and ``linear``/``matmul`` when they are the op
  carrying the FLOPs): 3 us a call + FLOPs at 170 GFLOP/s, or, when the weight is read faster
  than it is multiplied (a narrow batch against a wide weight: 32x1024 @ 1024x1024 took
  550-660 us, where the FLOPs alone say 400), the second operand's bytes at 7.5 GB/s;
- forward convolution: 45 us a call (oneDNN's fp32 primitive set-up: a 4x3x16x16 conv with 16
  3x3 filters takes 48-52 us) + FLOPs at 120 GFLOP/s;
- ``convolution_backward``: 180 us a call + FLOPs at 115 GFLOP/s.

And attention (``F.scaled_dot_product_attention``'s CPU flash kernels), whose bf16 backward has
a large cost of its own on one thread (4 threads' worth of tests running beside it, least of
20): B, H, L, D = 16, 4, 32, 16 took 127 / 288 us forward / backward in fp32 and 190 / 4,201 in
bf16 (the backward 14.6x); 8, 8, 128, 64: 2,956 / 8,063 against 1,739 / 19,992; from
4, 12, 256, 64 up bf16 is as fast or faster (1, 16, 1024, 64: 25.3 / 72.8 ms against 10.0 /
52.7). A Lightning Fabric transformer (d=64, 4 heads, L=32) ran its steps in 20.7 ms under
``precision="bf16-mixed"`` and 11.2 ms without: 12.1 ms a step of it was that backward, where
the matmul/conv prices saw bf16 paying. The bf16 side is the profiled time of those ops (a few
calls of milliseconds each: the profiler's per-call cost is small beside them); fp32 is priced
from FLOPs (4 B H L S D forward, 2.5x that backward) on the slow side of those figures, so
that turning autocast off is never priced cheaper than it is:

- forward: 60 us a call + FLOPs at 90 GFLOP/s (127 / 2,956 / 7,593 us measured above: priced
  107 / 3,043 / 9,008);
- backward: 150 us a call + 2.5x the forward FLOPs at 90 GFLOP/s (288 / 8,063 / 20,873
  measured: priced 267 / 7,606 / 22,517).

fp16 (``torch.autocast("cpu", dtype=torch.float16)``) on a CPU with AVX512-FP16 and no AMX-FP16
(a Xeon with AMX-BF16 and AVX512-FP16, one thread, torch 2.13, 7 Dec: ``benchmarks/cpu_autocast.py
--calibrate``) never ran faster than fp32:

- an fp16 ``addmm``/``mm``: 35 us a call + FLOPs at 155 GFLOP/s + 0.17 ns per element of the
  second operand (32x256 @ 256x256 71 us against 33 in fp32, 512x2048 @ 2048x2048 29.0 ms
  against 29.9; priced 73 us and 28.5 ms); under 64 kFLOP torch's own kernel, priced as fp32
  (4x64 @ 64x10: 3.8 us);
- an fp16 convolution forward: 100 us a call + FLOPs at 82 GFLOP/s (4x3x16x16 -> 16: 104 us,
  32x64x32x32 -> 64: 27.7 ms against 16.8 in fp32);
- its backward runs at 0.72 GFLOP/s + 100 us a call, a reference kernel: 2.9 ms for
  4x3x16x16 -> 16 against 0.28 in fp32, 823 ms for 32x16x32x32 -> 32 against 6.6. Its pace
  moves with the shape and with what runs around it (a 4x16x16x16 -> 16 layer's backward:
  12.4 ms alone, 29.2 ms a call inside an fp16 autocast training step), so the cpu_autocast
  analyzer takes its profiled time (milliseconds a call, where the profiler's own cost is
  small); this price is the calibration's summary;
- casts to fp16 cost what casts to bf16 do (2,560 elements 4.9 us against 3.8; 1 M 287 us
  against 344), priced alike.

bf16 on AMX pays only above a size: at 32x256 @ 256x256 fp32 took 22-24 us and bf16 27-30 us
(oneDNN's bf16 path costs ~18 us a call), at 128x512 @ 512x512 fp32 took 342-389 us and bf16
81-94 us. The fp32 figures move with the CPU's vector width and clock; on another CPU they
are an estimate (the finding's confidence is low).
"""

from __future__ import annotations

import json

CAST_FWD_CALL_S = 8e-6
CAST_BWD_CALL_S = 10e-6
CAST_ELEMENT_S = 0.2e-9
BF16_MATMUL_CALL_S = 22e-6
BF16_MATMUL_FLOPS_PER_S = 1.1e12
BF16_MATMUL_PACK_S = 0.13e-9  # per element of the second operand
BF16_MATMUL_MIN_FLOPS = 65536  # below: torch's own kernel, priced as fp32
BF16_CONV_CALL_S = 65e-6
BF16_CONV_FLOPS_PER_S = 300e9
BF16_CONV_BWD_CALL_S = 170e-6
BF16_CONV_BWD_FLOPS_PER_S = 430e9
FP16_MATMUL_CALL_S = 35e-6
FP16_MATMUL_FLOPS_PER_S = 155e9
FP16_MATMUL_PACK_S = 0.17e-9  # per element of the second operand
FP16_CONV_CALL_S = 100e-6
FP16_CONV_FLOPS_PER_S = 82e9
FP16_CONV_BWD_CALL_S = 100e-6
FP16_CONV_BWD_FLOPS_PER_S = 0.72e9
MATMUL_CALL_S = 3e-6
MATMUL_FLOPS_PER_S = 170e9
MATMUL_WEIGHT_BYTES_PER_S = 7.5e9
CONV_CALL_S = 45e-6
CONV_FLOPS_PER_S = 120e9
CONV_BWD_CALL_S = 180e-6
CONV_BWD_FLOPS_PER_S = 115e9

SDPA_FWD_CALL_S = 60e-6
SDPA_BWD_CALL_S = 150e-6
SDPA_FLOPS_PER_S = 90e9
SDPA_BWD_FLOPS = 2.5  # backward FLOPs over forward's
SDPA_OPS = frozenset({"aten::_scaled_dot_product_flash_attention_for_cpu",
                      "aten::_scaled_dot_product_flash_attention_for_cpu_backward"})

MATMUL_OPS = frozenset({"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm",
                        "aten::linear", "aten::matmul", "aten::addbmm"})
CONV_OPS = frozenset({"aten::convolution", "aten::_convolution", "aten::conv1d",
                      "aten::conv2d", "aten::conv3d", "aten::mkldnn_convolution"})
CONV_BWD_OPS = frozenset({"aten::convolution_backward"})
PRICED_OPS = MATMUL_OPS | CONV_OPS | CONV_BWD_OPS


def _second_operand_elements(name: str, input_shapes: str | None) -> int:
    """Elements of the matmul's second operand (the weight of a linear layer), 0 if unknown."""
    try:
        shapes = json.loads(input_shapes) if input_shapes else []
    except ValueError:
        return 0
    # addmm(bias, a, b), baddbmm(c, a, b): the operands follow the added term
    at = 2 if name in ("aten::addmm", "aten::baddbmm", "aten::addbmm") else 1
    if len(shapes) <= at or not isinstance(shapes[at], list):
        return 0
    n = 1
    for d in shapes[at]:
        if not isinstance(d, int):
            return 0
        n *= d
    return n


def elements(shape_json: str | None) -> int:
    """Elements of an op's first input, 0 when unknown (or a scalar)."""
    try:
        shapes = json.loads(shape_json) if shape_json else []
    except ValueError:
        return 0
    if not shapes or not isinstance(shapes[0], list) or not shapes[0]:
        return 0
    n = 1
    for d in shapes[0]:
        if not isinstance(d, int):
            return 0
        n *= d
    return n


def cast_seconds(phase: str, n_elements: int) -> float:
    """Seconds one fp32 <-> bf16 cast of ``n_elements`` costs in ``phase``."""
    call = CAST_BWD_CALL_S if phase == "backward" else CAST_FWD_CALL_S
    return call + n_elements * CAST_ELEMENT_S


def bf16_seconds(name: str, flops: int, input_shapes: str | None) -> float | None:
    """Seconds the op takes in bf16 on one thread, or None for an op not priced here."""
    return _low_seconds(_BF16, name, flops, input_shapes)


def fp16_seconds(name: str, flops: int, input_shapes: str | None) -> float | None:
    """Seconds the op takes in fp16 on one thread of a CPU with AVX512-FP16 (no AMX-FP16), or
    None for an op not priced here."""
    return _low_seconds(_FP16, name, flops, input_shapes)


# a low precision's prices: matmul (call, FLOP/s, per element of the second operand),
# convolution forward (call, FLOP/s) and backward (call, FLOP/s)
_BF16 = (BF16_MATMUL_CALL_S, BF16_MATMUL_FLOPS_PER_S, BF16_MATMUL_PACK_S, BF16_CONV_CALL_S,
         BF16_CONV_FLOPS_PER_S, BF16_CONV_BWD_CALL_S, BF16_CONV_BWD_FLOPS_PER_S)
_FP16 = (FP16_MATMUL_CALL_S, FP16_MATMUL_FLOPS_PER_S, FP16_MATMUL_PACK_S, FP16_CONV_CALL_S,
         FP16_CONV_FLOPS_PER_S, FP16_CONV_BWD_CALL_S, FP16_CONV_BWD_FLOPS_PER_S)


def _low_seconds(prices: tuple[float, ...], name: str, flops: int,
                 input_shapes: str | None) -> float | None:
    mm_call, mm_rate, mm_pack, conv_call, conv_rate, bwd_call, bwd_rate = prices
    if name in MATMUL_OPS:
        if flops < BF16_MATMUL_MIN_FLOPS:  # torch's own kernel, as in fp32
            return fp32_seconds(name, flops, input_shapes)
        return mm_call + flops / mm_rate + _second_operand_elements(name, input_shapes) * mm_pack
    if name in CONV_OPS:
        return conv_call + flops / conv_rate
    if name in CONV_BWD_OPS:
        return bwd_call + flops / bwd_rate
    return None


def fp32_seconds(name: str, flops: int, input_shapes: str | None) -> float | None:
    """Seconds the op would take in fp32 on one thread, or None for an op not priced here."""
    if name in MATMUL_OPS:
        weight_s = 4 * _second_operand_elements(name, input_shapes) / MATMUL_WEIGHT_BYTES_PER_S
        return MATMUL_CALL_S + max(flops / MATMUL_FLOPS_PER_S, weight_s)
    if name in CONV_OPS:
        return CONV_CALL_S + flops / CONV_FLOPS_PER_S
    if name in CONV_BWD_OPS:
        return CONV_BWD_CALL_S + flops / CONV_BWD_FLOPS_PER_S
    return None


def sdpa_fp32_seconds(name: str, input_shapes: str | None) -> float | None:
    """Seconds a CPU flash-attention op would take in fp32 on one thread, from its query and
    key shapes ([B, H, L, D], [B, H, S, D]: the first two 4-d inputs, after the backward's
    incoming gradient), or None where they are not there."""
    if name not in SDPA_OPS:
        return None
    try:
        shapes = json.loads(input_shapes) if input_shapes else []
    except ValueError:
        return None
    dims = [sh for sh in shapes if isinstance(sh, list) and len(sh) == 4
            and all(isinstance(d, int) and d > 0 for d in sh)]
    backward = name.endswith("_backward")
    if backward:
        dims = dims[1:]  # grad_out, then query, key, value
    if len(dims) < 2:
        return None
    (b, h, q_len, d), (_, _, k_len, _) = dims[0], dims[1]
    flops = 4 * b * h * q_len * k_len * d
    if backward:
        return SDPA_BWD_CALL_S + SDPA_BWD_FLOPS * flops / SDPA_FLOPS_PER_S
    return SDPA_FWD_CALL_S + flops / SDPA_FLOPS_PER_S

