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
