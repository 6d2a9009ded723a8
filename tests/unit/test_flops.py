"""FLOPs from recorded shapes, against torch.utils.flop_counter on the same ops."""

from __future__ import annotations

import msgspec
import orjson
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dsprof.ingest.flops import op_flops
from dsprof.ingest.trace_schema import Args


def args(dims, concrete=None):
    return Args(input_dims=msgspec.Raw(orjson.dumps(dims)),
                concrete=msgspec.Raw(orjson.dumps(concrete or [])))


def counted(fn, *tensors):
    with FlopCounterMode(display=False) as fc:
        fn(*tensors)
    return fc.get_total_flops()


def test_matmuls():
    a, b, bias = torch.randn(8, 16), torch.randn(16, 32), torch.randn(32)
    assert op_flops("aten::mm", args([[8, 16], [16, 32]])) == counted(torch.mm, a, b)
    assert op_flops("aten::addmm", args([[32], [8, 16], [16, 32], [], []])) == \
        counted(torch.addmm, bias, a, b)
    x, y = torch.randn(4, 8, 16), torch.randn(4, 16, 2)
    assert op_flops("aten::bmm", args([[4, 8, 16], [4, 16, 2]])) == counted(torch.bmm, x, y)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 3)])
def test_convolution_uses_stride_and_padding(stride, padding):
    x, w = torch.randn(2, 3, 32, 32), torch.randn(8, 3, 7, 7)
    expected = counted(lambda a, b: torch.nn.functional.conv2d(a, b, stride=stride,
                                                              padding=padding), x, w)
    concrete = ["", "", "", f"[{stride}, {stride}]", f"[{padding}, {padding}]", "[1, 1]",
                "False", "[0, 0]", "1"]
    got = op_flops("aten::convolution", args([[2, 3, 32, 32], [8, 3, 7, 7], [], [], [], [], [],
                                              [], []], concrete))
    assert got == expected


def test_convolution_without_recorded_stride_gets_none():
    assert op_flops("aten::convolution", args([[2, 3, 32, 32], [8, 3, 7, 7]])) is None


def test_sdpa_forward():
    q = k = v = torch.randn(2, 4, 16, 8)
    # the two matmuls of attention, written out (FlopCounterMode counts 0 for the fused CPU op)
    expected = counted(lambda a, b, c: (a @ b.transpose(-1, -2)).softmax(-1) @ c, q, k, v)
    got = op_flops("aten::_scaled_dot_product_flash_attention_for_cpu",
                   args([[2, 4, 16, 8], [2, 4, 16, 8], [2, 4, 16, 8]]))
    assert got == expected


def test_ops_without_a_formula_have_none():
    assert op_flops("aten::relu", args([[8, 16]])) is None
    assert op_flops("aten::linear", args([[8, 16], [32, 16], [32]])) is None


def _conv_reference(stride, padding, dilation, groups):
    x, w = torch.randn(2, 4, 17, 17), torch.randn(8, 4 // groups, 3, 3)
    return counted(lambda a, b: torch.nn.functional.conv2d(
        a, b, stride=stride, padding=padding, dilation=dilation, groups=groups), x, w)


def test_mkldnn_convolution_reads_padding_before_stride():
    # aten::mkldnn_convolution(input, weight, bias, padding, stride, dilation, groups)
    dims = [[2, 4, 17, 17], [8, 2, 3, 3], [8], [], [], [], []]
    got = op_flops("aten::mkldnn_convolution",
                   args(dims, ["", "", "", "[1, 1]", "[3, 3]", "[2, 2]", "2"]))
    assert got == _conv_reference(3, 1, 2, 2)


def test_cudnn_convolution_both_overloads():
    dims = [[2, 4, 17, 17], [8, 4, 3, 3], [], [], [], [], [], [], []]
    expected = _conv_reference(2, 1, 1, 1)
    # since torch 1.8: (input, weight, padding, stride, dilation, groups, ...)
    assert op_flops("aten::cudnn_convolution", args(
        dims, ["", "", "[1, 1]", "[2, 2]", "[1, 1]", "1", "False", "False", "True"])) == expected
    # before: (input, weight, bias, padding, stride, dilation, groups, ...)
    assert op_flops("aten::cudnn_convolution", args(
        dims, ["", "", "", "[1, 1]", "[2, 2]", "[1, 1]", "1", "False", "False"])) == expected


def test_cudnn_convolution_backward():
    # (input, grad_out, weight, padding, stride, dilation, groups, ..., output_mask)
    dims = [[2, 4, 17, 17], [2, 8, 9, 9], [8, 4, 3, 3]] + [[]] * 8
    concrete = ["", "", "", "[1, 1]", "[2, 2]", "[1, 1]", "1", "False", "False", "True",
                "[True, True]"]
    assert op_flops("aten::cudnn_convolution_backward", args(dims, concrete)) == \
        2 * _conv_reference(2, 1, 1, 1)


def test_flash_attention_forward_reads_batch_seq_heads_dim():
    q = k = v = torch.randn(2, 4, 16, 8)  # [B, H, S, D]
    expected = counted(lambda a, b, c: (a @ b.transpose(-1, -2)).softmax(-1) @ c, q, k, v)
    bshd = [2, 16, 4, 8]
    assert op_flops("aten::_flash_attention_forward", args([bshd, bshd, bshd])) == expected


@pytest.mark.parametrize("concrete", [
    ["", "", "", "[0, 0]", "[0, 0]", "[0, 0]", "1"],  # stride 0: used to divide by zero
    ["", "", "", "[1, 1]", "[1]", "[1, 1, 1]", "1"],  # lengths that disagree
    ["", "", "", "same", "[1, 1]", "[1, 1]", "1"],     # text where a list belongs
    ["", "", "", {"a": 1}, ["x"], [None], "1"],       # values of the wrong type
    "not a list",
])
def test_unexpected_conv_layouts_give_none(concrete):
    dims = [[2, 4, 17, 17], [8, 4, 3, 3], [8], [], [], [], []]
    for name in ("aten::mkldnn_convolution", "aten::convolution", "aten::cudnn_convolution",
                 "aten::convolution_backward"):
        assert op_flops(name, args(dims, concrete)) is None


@pytest.mark.parametrize("dims", [[[2, "x"], [3, 4]], [None, None], {"a": 1}, [[1e400]], []])
def test_unexpected_dims_give_none(dims):
    for name in ("aten::mm", "aten::bmm", "aten::mkldnn_rnn_layer",
                 "aten::_scaled_dot_product_flash_attention_for_cpu"):
        assert op_flops(name, args(dims)) is None


def _lstm_reference(bidirectional: bool) -> tuple[int, list]:
    """FLOPs of a 2-layer LSTM forward (the CPU recording, checked against FlopCounterMode in
    test_flops_recorded) and its weight shapes in the order cuDNN takes them."""
    from tests.corpus.reference import reference_flops

    lstm = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(5, 3, 8)
    with torch.no_grad():
        flops = reference_flops(lambda: lstm(x))
    return flops, [list(p.shape) for p in lstm._flat_weights]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_cudnn_rnn_counts_every_weight_matmul(bidirectional):
    expected, weights = _lstm_reference(bidirectional)
    dirs = 2 if bidirectional else 1
    # aten::_cudnn_rnn(input, weight[], weight_stride0, weight_buf, hx, cx, mode, hidden_size,
    #                  proj_size, num_layers, batch_first, dropout, train, bidirectional, ...)
    dims = [[5, 3, 8], weights, [], [], [2 * dirs, 3, 16], [2 * dirs, 3, 16]] + [[]] * 10
    assert op_flops("aten::_cudnn_rnn", args(dims)) == expected
    mask = ["", "", "", "", "", "", "", "", "", "", "[True, True, True, True]"]
    assert op_flops("aten::_cudnn_rnn_backward", args(dims, mask)) == 2 * expected
    mask[-1] = "[False, False, False, True]"  # weight gradient only (the input needs none)
    assert op_flops("aten::_cudnn_rnn_backward", args(dims, mask)) == expected
