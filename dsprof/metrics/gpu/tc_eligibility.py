"""Matrix math that could have run on Tensor Cores and did not, and why.

Every op with FLOPs (matmul, convolution, attention; see :mod:`dsprof.ingest.flops`) is checked.
On a GPU run the verdict comes from its kernels (``kernels.tensor_core``); on a CPU run, or for
ops whose kernels were not captured, it is predicted from the op's dtype and shapes: what cuBLAS
and cuDNN would do with them on an Ampere-or-newer GPU. The reasons, first match wins:

* ``matrix-vector``: mv / addmv / dot have no Tensor Core kernel.
* ``fp64``: double precision (only A100/H100 DMMA, which PyTorch's fp64 GEMMs rarely reach).
* ``fp32, TF32 off``: fp32 matmuls use Tensor Cores only with TF32 enabled
  (``torch.backends.cuda.matmul.allow_tf32`` / ``set_float32_matmul_precision('high')``;
  convolutions: ``torch.backends.cudnn.allow_tf32``, on by default). Pre-Ampere GPUs have no
  TF32: there it is ``fp32 on a GPU without TF32``.
* ``dims not multiple of 8``: fp16/bf16 GEMMs need M, N, K (convolutions: input and output
  channels) to be multiples of 8 for the Tensor Core kernels.
* ``no Tensor Core kernel chosen``: eligible, yet the library picked a CUDA-core kernel (tiny
  or oddly strided shapes).

TF32 state: what the dsprof session recorded in ``meta.json`` (``precision``); for imported
traces, inferred from the kernels (an fp32 op that ran on Tensor Cores means TF32 was on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from dsprof.devices import BF16, FP16, FP32, FP64, dtype_mode
from dsprof.manifest import manifest_of
from dsprof.metrics.gpu.attribution import first_dtype

MATRIX_VECTOR = "matrix-vector"
REASON_FP64 = "fp64"
REASON_TF32_OFF = "fp32, TF32 off"
REASON_NO_TF32_DEVICE = "fp32 on a GPU without TF32"
REASON_UNALIGNED = "dims not multiple of 8"
REASON_NOT_CHOSEN = "no Tensor Core kernel chosen"

_MATRIX_VECTOR_OPS = ("aten::mv", "aten::addmv", "aten::dot", "aten::vdot")


@dataclass(frozen=True)
class Verdict:
    """Tensor Core verdict of one op with FLOPs."""

    rank: int
    op_id: int
    step: int | None
    name: str
    module: str | None
    phase: str | None
    mode: str | None
    """fp32, fp16, bf16, fp64 ... of its first input"""
    dims: dict[str, int]
    """the dims that matter for alignment: M, N, K; C_in, C_out; head_dim"""
    tensor_core: bool
    measured: bool
    """True when the verdict comes from its kernels, False when predicted from dtype/shapes"""
    reason: str | None
    """why not, when ``tensor_core`` is False"""
    time_ns: int
    """its kernels' GPU time, or the op's own duration when it has no kernels"""


def alignment_dims(name: str, shapes: Any) -> dict[str, int]:
    """The dims whose multiple-of-8 alignment Tensor Core kernels need, from Input Dims;
    empty unless each is an integer (a trace's shapes are data: a dim that is text would go
    on as text into a finding's words and fix)."""
    try:
        dims = _alignment_dims(name, shapes)
    except (TypeError, IndexError):
        return {}
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in dims.values())
    return dims if ok else {}


def _alignment_dims(name: str, shapes: Any) -> dict[str, int]:
    try:
        dims = orjson.loads(shapes) if isinstance(shapes, str) else shapes
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(dims, list):
        return {}
    short = name.split("::")[-1]

    def mk(a: list[int], b: list[int]) -> dict[str, int]:
        if len(a) >= 2 and len(b) >= 2:
            return {"M": a[-2], "K": a[-1], "N": b[-1]}
        return {}

    if short in ("mm", "bmm", "matmul") and len(dims) >= 2:
        return mk(dims[0], dims[1])
    if short in ("addmm", "baddbmm", "addbmm") and len(dims) >= 3:
        return mk(dims[1], dims[2])
    if short == "linear" and len(dims) >= 2 and len(dims[0]) >= 1 and len(dims[1]) == 2:
        return {"M": int(_prod(dims[0][:-1])), "K": dims[0][-1], "N": dims[1][0]}
    if "conv" in short and "backward" in short:
        return _conv_backward_channels(short, dims)
    if "conv" in short and len(dims) >= 2 and len(dims[0]) >= 3 and len(dims[1]) >= 3:
        return {"C_in": dims[0][1], "C_out": dims[1][0]}
    if "attention" in short and dims and len(dims[0]) >= 1:
        return {"head_dim": dims[0][-1]}
    return {}


def _conv_backward_channels(short: str, dims: list[Any]) -> dict[str, int]:
    """C_in, C_out of a conv backward op, from the tensors where its own signature puts them
    (its first input is grad_out or a size, not the conv's input: reading it as the forward's
    input took the batch size for C_out)."""
    def shape(i: int) -> list[Any]:
        return dims[i] if len(dims) > i and isinstance(dims[i], list) else []

    if short == "convolution_backward":  # (grad_out, input, weight, ...)
        x, w = shape(1), shape(2)
    elif short == "cudnn_convolution_backward":  # (input, grad_out, weight, ...)
        x, w = shape(0), shape(2)
    elif short == "cudnn_convolution_backward_input":  # (input_size, grad_out, weight, ...)
        w = shape(2)
        return {"C_in": w[1], "C_out": w[0]} if len(w) >= 3 else {}
    elif short == "cudnn_convolution_backward_weight":  # (weight_size, grad_out, input, ...)
        g, x = shape(1), shape(2)
        return {"C_in": x[1], "C_out": g[1]} if len(g) >= 3 and len(x) >= 3 else {}
    else:
        return {}
    return {"C_in": x[1], "C_out": w[0]} if len(x) >= 3 and len(w) >= 3 else {}


def _prod(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def tf32_state(meta: dict[str, Any], ops: list[dict[str, Any]]) -> tuple[bool | None, bool]:
    """(matmul TF32 on, cuDNN TF32 on): recorded by the session, else inferred (None: unknown)."""
    prec = meta.get("precision") or {}
    if "matmul_allow_tf32" in prec:
        return bool(prec["matmul_allow_tf32"]), bool(prec.get("cudnn_allow_tf32", True))
    fp32_tc = [o for o in ops if dtype_mode(first_dtype(o["dtypes"])) == FP32
               and "conv" not in o["name"] and o["any_tc"] is not None]
    if not fp32_tc:
        return None, True
    return any(o["any_tc"] for o in fp32_tc), True


def compute_capability(meta: dict[str, Any]) -> float | None:
    return manifest_of(meta).compute_capability()


def verdicts(ops: list[dict[str, Any]], meta: dict[str, Any]) -> list[Verdict]:
    """One verdict per op with FLOPs (rows of :func:`gpu_attribution.flop_ops`)."""
    matmul_tf32, cudnn_tf32 = tf32_state(meta, ops)
    cc = compute_capability(meta)
    has_tf32 = cc is None or cc >= 8.0
    out = []
    for o in ops:
        name = o["name"]
        mode = dtype_mode(first_dtype(o["dtypes"]))
        dims = alignment_dims(name, o["input_shapes"])
        measured = bool(o["n_kernels"])
        predicted_reason = _predicted_reason(name, mode, dims, matmul_tf32, cudnn_tf32, has_tf32)
        if measured:
            tc = bool(o["any_tc"])
            reason = None if tc else (predicted_reason or REASON_NOT_CHOSEN)
        else:
            tc = predicted_reason is None and mode in (FP32, FP16, BF16)
            reason = None if tc else (predicted_reason or REASON_NOT_CHOSEN)
        time_ns = int(o["gpu_ns"]) if measured and o["gpu_ns"] is not None else int(o["dur_ns"])
        out.append(Verdict(int(o["rank"]), int(o["id"]), o["step"], name, o["module"],
                           o["phase"], mode, dims, tc, measured, reason, time_ns))
    return out


def _predicted_reason(name: str, mode: str | None, dims: dict[str, int],
                      matmul_tf32: bool | None, cudnn_tf32: bool, has_tf32: bool) -> str | None:
    if name in _MATRIX_VECTOR_OPS:
        return MATRIX_VECTOR
    if mode == FP64:
        return REASON_FP64
    if mode == FP32:
        if not has_tf32:
            return REASON_NO_TF32_DEVICE
        on = cudnn_tf32 if "conv" in name else matmul_tf32
        return None if on else REASON_TF32_OFF
    if mode in (FP16, BF16):
        bad = {k: v for k, v in dims.items() if v % 8}
        return REASON_UNALIGNED if bad else None
    return REASON_NOT_CHOSEN
