"""Which ops the CPU fp64 price counts (analyzers/cpu_fp64.py); the price itself is checked on
real runs in tests/integration/test_cpu_fp64.py."""

from __future__ import annotations

from dsprof.analyzers.cpu_fp64 import _first_float


def test_an_op_is_fp64_by_its_first_floating_point_input():
    # an fp64 matmul, and an fp64 embedding lookup (its indices come first)
    assert _first_float('["double", "double"]') == "double"
    assert _first_float('["long int", "double"]') == "double"
    # an fp32 op handed a 0-dim fp64 tensor after its fp32 input is an fp32 op
    assert _first_float('["float", "double"]') == "float"
    # no floating-point input at all
    assert _first_float('["long int", "Scalar"]') is None
    assert _first_float(None) is None

