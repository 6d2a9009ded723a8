"""What an op reads and writes, from the ``input_shapes`` / ``dtypes`` columns, and the
bandwidth and per-op overhead that turn bytes and op counts into seconds.

Shared by the fusion and precision analyzers. Bytes are counted the way a roofline does: every
tensor input read once, the output (the broadcast of the tensor inputs) written once. Inputs
recorded as ``Scalar``/``ScalarList`` or without a shape move nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from math import prod
from typing import Any

from dsprof.vocabulary import element_bytes

LOW_PRECISION = ("c10::Half", "c10::BFloat16", "c10::Float8_e4m3fn", "c10::Float8_e5m2")

DEFAULT_OP_OVERHEAD_S = 5e-6
"""Per-op dispatch cost when the trace has no small pointwise op to measure it on."""


@dataclass(frozen=True)
class OpIO:
    """The tensor inputs of one op: (shape, element bytes) each, and the output shape."""

    inputs: tuple[tuple[tuple[int, ...], int], ...]
    out_shape: tuple[int, ...] | None
    out_itemsize: int

    @property
    def in_bytes(self) -> int:
        return sum(prod(s) * b for s, b in self.inputs)

    @property
    def out_bytes(self) -> int:
        return 0 if self.out_shape is None else prod(self.out_shape) * self.out_itemsize

    @property
    def bytes(self) -> int:
        return self.in_bytes + self.out_bytes

    @property
    def out_numel(self) -> int:
        return 0 if self.out_shape is None else prod(self.out_shape)


def broadcast(shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    if not shapes:
        return None
    ndim = max(len(s) for s in shapes)
    out = []
    for k in range(ndim):
        dims = {s[k - ndim + len(s)] for s in shapes if k - ndim + len(s) >= 0} - {1}
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)


@lru_cache(maxsize=65536)
def op_io(shapes_json: str | None, dtypes_json: str | None) -> OpIO | None:
    """Parse one op's recorded inputs; None without ``record_shapes``."""
    if not shapes_json or not dtypes_json:
        return None
    try:
        shapes: list[Any] = json.loads(shapes_json)
        types: list[Any] = json.loads(dtypes_json)
    except ValueError:
        return None
    inputs = []
    for shape, dtype in zip(shapes, types):
        size = element_bytes(dtype)
        if size is None or not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            continue
        inputs.append((tuple(shape), size))
    float_sizes = [b for s, b in inputs if b in (2, 4, 8)]
    itemsize = float_sizes[0] if float_sizes else (inputs[0][1] if inputs else 4)
    out = broadcast([s for s, _ in inputs])
    return OpIO(tuple(inputs), out, itemsize)


def dtypes_of(dtypes_json: str | None) -> list[str]:
    if not dtypes_json:
        return []
    try:
        return [d for d in json.loads(dtypes_json) if isinstance(d, str) and element_bytes(d)]
    except ValueError:
        return []
