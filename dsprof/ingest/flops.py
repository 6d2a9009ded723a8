"""FLOPs of matmul, convolution and attention ops, computed from recorded input shapes.

torch.profiler only writes FLOPs to its Python ``FunctionEvent`` objects, never to the trace,
so an imported trace has none. We compute them from ``Input Dims`` (and, for convolutions, the
stride/padding/dilation in ``Concrete Inputs``), counting a multiply-add as 2 FLOPs, the same
convention as ``torch.utils.flop_counter``. Only the op that does the arithmetic is counted
(``aten::mm``, not the ``aten::linear`` or ``aten::matmul`` around it); the caller drops FLOPs of
an op whose ancestor already has some, so nothing is counted twice.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from math import prod
from typing import Any

import orjson

from dsprof.ingest.trace_schema import Args, input_dims
from dsprof.log import logger

Shape = Sequence[int]


def _mm(dims: list[Any], _c: list[Any]) -> int | None:
    a, b = dims[0], dims[1]
    if len(a) == 2 and len(b) == 2:
        return 2 * a[0] * a[1] * b[1]
    return None


def _addmm(dims: list[Any], _c: list[Any]) -> int | None:
    return _mm(dims[1:3], _c)


def _bmm(dims: list[Any], _c: list[Any]) -> int | None:
    a, b = dims[0], dims[1]
    if len(a) == 3 and len(b) == 3:
        return 2 * a[0] * a[1] * a[2] * b[2]
    return None


def _baddbmm(dims: list[Any], _c: list[Any]) -> int | None:
    return _bmm(dims[1:3], _c)


def _mv(dims: list[Any], _c: list[Any]) -> int | None:
    a = dims[0]
    return 2 * a[0] * a[1] if len(a) == 2 else None


def _addmv(dims: list[Any], _c: list[Any]) -> int | None:
    return _mv(dims[1:2], _c)


def _dot(dims: list[Any], _c: list[Any]) -> int | None:
    return 2 * dims[0][0] if len(dims[0]) == 1 else None


def _ints(text: Any) -> list[int] | None:
    if isinstance(text, list):
        return [int(v) for v in text]
    if not isinstance(text, str) or not text.startswith("["):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else None


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_fwd_flops(x: Shape, w: Shape, concrete: list[Any], at: tuple[int, int, int],
                    transposed: bool = False) -> int | None:
    """x: [N, C, *spatial], w: [O, C/groups, *kernel] (transposed: [C, O/groups, *kernel]);
    ``at``: where this op records (stride, padding, dilation) in its Concrete Inputs -- each
    op has its own argument order (``aten::mkldnn_convolution`` puts padding before stride)."""
    nd = len(x) - 2
    if nd < 1 or len(w) != nd + 2:
        return None
    # Without the recorded stride/padding/dilation (traces before torch 2.0 have no Concrete
    # Inputs) the output size is unknown; a guess would be off by stride**2, so give none.
    if len(concrete) <= max(at):
        return None
    stride, padding, dilation = (_ints(concrete[i]) for i in at)
    if not stride or padding is None or not dilation:
        return None
    stride, padding, dilation = (v * nd if len(v) == 1 else v for v in (stride, padding, dilation))
    if min(stride) < 1 or len(stride) != nd or len(padding) != nd or len(dilation) != nd:
        return None
    kernel = list(w[2:])
    if transposed:
        # a transposed conv costs what the forward conv mapping its output back to x costs
        conv_shape = list(x[2:])
    else:
        conv_shape = [_conv_out(x[2 + i], kernel[i], stride[i], padding[i], dilation[i])
                      for i in range(nd)]
    if min(conv_shape) < 0:
        return None
    # N * (C_out * C_in/groups * prod(kernel)) * prod(output spatial) multiply-adds
    return 2 * x[0] * prod(w) * prod(conv_shape)


def _is_true(value: Any) -> bool:
    return str(value).lower() == "true"


def _convolution(dims: list[Any], concrete: list[Any]) -> int | None:
    # aten::convolution / aten::_convolution(input, weight, bias, stride, padding, dilation,
    #                                        transposed, output_padding, groups, ...)
    transposed = len(concrete) > 6 and _is_true(concrete[6])
    return _conv_fwd_flops(dims[0], dims[1], concrete, (3, 4, 5), transposed)


def _mkldnn_convolution(dims: list[Any], concrete: list[Any]) -> int | None:
    # aten::mkldnn_convolution(input, weight, bias, padding, stride, dilation, groups): padding
    # comes BEFORE stride (measured on torch 2.13 CPU; a Conv1d arrives unsqueezed to 2-d)
    return _conv_fwd_flops(dims[0], dims[1], concrete, (4, 3, 5))


def _cudnn_convolution(dims: list[Any], concrete: list[Any]) -> int | None:
    # aten::cudnn_convolution(input, weight, padding, stride, dilation, groups, ...) since
    # torch 1.8; the older overload had a bias third: (input, weight, bias, padding, ...)
    first = 2 if len(concrete) > 2 and _ints(concrete[2]) is not None else 3
    return _conv_fwd_flops(dims[0], dims[1], concrete, (first + 1, first, first + 2))


def _grads_asked(mask: Any) -> int:
    """How many of (grad_input, grad_weight) an ``output_mask`` like '[True, True, False]'
    asks for (2 when it is not recorded)."""
    if isinstance(mask, str) and mask.startswith("["):
        return sum(1 for v in mask.strip("[]").split(",")[:2] if _is_true(v.strip()))
    return 2


def _convolution_backward(dims: list[Any], concrete: list[Any]) -> int | None:
    # aten::convolution_backward(grad_out, input, weight, bias_sizes, stride, padding, dilation,
    #                            transposed, output_padding, groups, output_mask)
    transposed = len(concrete) > 7 and _is_true(concrete[7])
    fwd = _conv_fwd_flops(dims[1], dims[2], concrete, (4, 5, 6), transposed)
    if fwd is None:
        return None
    # each gradient (input, weight) costs one forward conv
    return fwd * _grads_asked(concrete[10] if len(concrete) > 10 else None)


def _cudnn_convolution_backward(dims: list[Any], concrete: list[Any]) -> int | None:
    # aten::cudnn_convolution_backward(input, grad_out, weight, padding, stride, dilation,
    #                                  groups, benchmark, deterministic, allow_tf32, output_mask)
    fwd = _conv_fwd_flops(dims[0], dims[2], concrete, (4, 3, 5))
    if fwd is None:
        return None
    return fwd * _grads_asked(concrete[10] if len(concrete) > 10 else None)


def _rnn_layer(dims: list[Any], _c: list[Any]) -> int | None:
    # aten::mkldnn_rnn_layer(input [T, B, in], w_ih [G*H, in], w_hh [G*H, H], ...): the CPU
    # LSTM runs one of these per layer and direction; the gate nonlinearities are not counted
    # (as torch.utils.flop_counter counts no pointwise op)
    x, w_ih, w_hh = dims[0], dims[1], dims[2]
    if len(x) != 3 or len(w_ih) != 2 or len(w_hh) != 2:
        return None
    return 2 * x[0] * x[1] * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


def _rnn_layer_backward(dims: list[Any], _c: list[Any]) -> int | None:
    # same leading inputs as the forward; grad of input and of both weights: 2x the forward
    fwd = _rnn_layer(dims, _c)
    return None if fwd is None else 2 * fwd


def _sdpa_dims(dims: list[Any]) -> tuple[int, int, int, int, int] | None:
    q, k, v = dims[0], dims[1], dims[2]
    if len(q) != 4 or len(k) != 4 or len(v) != 4:
        return None
    b, h, lq, e = q
    s, ev = k[2], v[3]
    return b * h, lq, s, e, ev


def _rnn_tokens(x: Any) -> int | None:
    # [T, B, in] / [B, T, in]: T*B either way; a packed sequence is [sum of lengths, in]
    if isinstance(x, list) and len(x) == 3:
        return x[0] * x[1]
    if isinstance(x, list) and len(x) == 2:
        return x[0]
    return None


def _cudnn_rnn(dims: list[Any], _c: list[Any]) -> int | None:
    # aten::_cudnn_rnn(input, weight[], weight_stride0, weight_buf, hx, cx, mode, ...): every
    # 2-d weight (w_ih, w_hh, w_hr of each layer and direction) multiplies every token once
    tokens = _rnn_tokens(dims[0])
    weights = dims[1]
    if tokens is None or not isinstance(weights, list):
        return None
    macs = sum(w[0] * w[1] for w in weights if isinstance(w, list) and len(w) == 2)
    return 2 * tokens * macs if macs else None


def _cudnn_rnn_backward(dims: list[Any], concrete: list[Any]) -> int | None:
    # same leading inputs as the forward; output_mask (last) = (input, hx, cx, weight): the
    # input and weight gradients each cost one forward
    fwd = _cudnn_rnn(dims, concrete)
    if fwd is None:
        return None
    mask = concrete[-1] if concrete else None
    if isinstance(mask, str) and mask.startswith("["):
        flags = [v.strip().lower() == "true" for v in mask.strip("[]").split(",")]
        if len(flags) == 4:
            return fwd * (flags[0] + flags[3])
    return 2 * fwd


def _bshd(dims: list[Any]) -> list[Any]:
    """q, k, v recorded as [batch, seq, heads, dim] (``_flash_attention_forward`` and
    ``_efficient_attention_forward``) -> [batch, heads, seq, dim]."""
    return [[d[0], d[2], d[1], d[3]] if len(d) == 4 else d for d in dims[:3]]


def _sdpa(dims: list[Any], _c: list[Any]) -> int | None:
    d = _sdpa_dims(dims)
    if d is None:
        return None
    bh, lq, s, e, ev = d
    return 2 * bh * lq * s * e + 2 * bh * lq * s * ev


def _sdpa_bshd(dims: list[Any], _c: list[Any]) -> int | None:
    return _sdpa(_bshd(dims), _c)


def _sdpa_backward(dims: list[Any], _c: list[Any]) -> int | None:
    # inputs start with grad_out, then q, k, v (flash/efficient/for_cpu backward signatures)
    d = _sdpa_dims(dims[1:4])
    if d is None:
        return None
    bh, lq, s, e, ev = d
    # recompute scores, then grad_v, grad_scores, grad_q, grad_k (flop_counter's formula)
    return 2 * bh * lq * s * (3 * e + 2 * ev)


FORMULAS: dict[str, Callable[[list[Any], list[Any]], int | None]] = {
    "aten::mm": _mm,
    "aten::addmm": _addmm,
    "aten::bmm": _bmm,
    "aten::baddbmm": _baddbmm,
    "aten::mv": _mv,
    "aten::addmv": _addmv,
    "aten::dot": _dot,
    "aten::convolution": _convolution,
    "aten::_convolution": _convolution,
    "aten::convolution_backward": _convolution_backward,
    "aten::cudnn_convolution": _cudnn_convolution,
    "aten::cudnn_convolution_backward": _cudnn_convolution_backward,
    "aten::mkldnn_convolution": _mkldnn_convolution,
    "aten::mkldnn_rnn_layer": _rnn_layer,
    "aten::mkldnn_rnn_layer_backward": _rnn_layer_backward,
    "aten::_cudnn_rnn": _cudnn_rnn,
    "aten::_cudnn_rnn_backward": _cudnn_rnn_backward,
    "aten::_scaled_dot_product_flash_attention": _sdpa,
    "aten::_scaled_dot_product_flash_attention_for_cpu": _sdpa,
    "aten::_scaled_dot_product_efficient_attention": _sdpa,
    "aten::_scaled_dot_product_cudnn_attention": _sdpa,
    "aten::_flash_attention_forward": _sdpa_bshd,
    "aten::_efficient_attention_forward": _sdpa_bshd,
    "aten::_scaled_dot_product_flash_attention_backward": _sdpa_backward,
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward,
    "aten::_scaled_dot_product_efficient_attention_backward": _sdpa_backward,
    "aten::_scaled_dot_product_cudnn_attention_backward": _sdpa_backward,
}


def op_flops(name: str, args: Args) -> int | None:
    """FLOPs of one op from its trace args, or None when it is not a counted op."""
    formula = FORMULAS.get(name)
    raw_dims = input_dims(args)
    if formula is None or not len(raw_dims):
        return None
    # Any layout this formula did not expect (a new torch, an unknown overload, a hand-edited
    # trace) gives None for this op, never an error: one op must not sink the ingest.
    try:
        dims = orjson.loads(bytes(raw_dims))
        if not isinstance(dims, list):
            return None
        concrete = orjson.loads(bytes(args.concrete)) if len(args.concrete) else []
        if not isinstance(concrete, list):
            concrete = []
        value = formula(dims, concrete)
        return int(value) if value is not None and value >= 0 else None
    except Exception as exc:  # noqa: BLE001 - see above; the caller counts the op as unknown
        logger.debug("FLOPs of %s not computed from dims %s: %r", name,
                     bytes(raw_dims)[:200], exc)
        return None
