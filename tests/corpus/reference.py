"""The FLOPs reference the corpus checks dsprof against: ``torch.utils.flop_counter``.

``FlopCounterMode`` has no formula for two ops that torch 2.13 runs on CPU (measured: it counts
0 FLOPs for ``F.scaled_dot_product_attention`` and for ``nn.LSTM``): the fused CPU attention
``_scaled_dot_product_flash_attention_for_cpu`` (+ backward) and the oneDNN LSTM layer
``mkldnn_rnn_layer`` (+ backward). We register torch's own attention formulas
(``sdpa_flop_count``, ``sdpa_backward_flop_count``) for the first, and for the second the plain
count of its two matmuls per time step (input and hidden projections), 2x for the backward.

One formula is corrected: ``conv_backward_flop`` computes the weight gradient of a grouped
convolution as an ungrouped conv of input and grad_out, so a depthwise conv's weight gradient
comes out ``groups`` times too big (measured: Conv2d(8, 8, 3, groups=8) backward 209,952 FLOPs,
9x the 23,328 of its forward; the weight gradient does exactly the forward's multiply-adds). The
corrected formula counts the weight gradient as one forward conv (what torch counts for groups=1)
and keeps torch's own count for the input gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import (
    FlopCounterMode,
    conv_flop_count,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)


def _sdpa(q, k, v, *_a: Any, out_shape: Any = None, **_kw: Any) -> int:
    return sdpa_flop_count(q, k, v)


def _sdpa_backward(grad, q, k, v, *_a: Any, out_shape: Any = None, **_kw: Any) -> int:
    return sdpa_backward_flop_count(grad, q, k, v)


def _rnn_layer(x, w_ih, w_hh, *_a: Any, out_shape: Any = None, **_kw: Any) -> int:
    steps, batch = x[0], x[1]
    return 2 * steps * batch * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


def _rnn_layer_backward(x, w_ih, w_hh, *_a: Any, out_shape: Any = None, **_kw: Any) -> int:
    return 2 * _rnn_layer(x, w_ih, w_hh)


def _conv_backward(grad_out, x, w, _bias, _stride, _padding, _dilation, transposed,
                   _output_padding, _groups, output_mask, out_shape: Any = None,
                   **_kw: Any) -> int:
    flops = 0
    if output_mask[0]:  # torch's own count
        flops += conv_flop_count(grad_out, w, out_shape[0], not transposed)
    if output_mask[1]:  # one forward conv (torch's count ignores groups here)
        flops += conv_flop_count(x, w, grad_out, transposed)
    return flops


def flop_counter() -> FlopCounterMode:
    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward,
        aten.mkldnn_rnn_layer: _rnn_layer,
        aten.mkldnn_rnn_layer_backward: _rnn_layer_backward,
        aten.convolution_backward: _conv_backward,
    })


def reference_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (forward and backward of one step) by FlopCounterMode."""
    with flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())
