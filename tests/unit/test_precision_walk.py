"""The precision analyzer's vectorised walk from a kernel to its innermost matmul/conv op
(issue 16: it replaced a per-kernel walk over a Python dict of every op): the same answer as
that walk, whatever the ids, with its stops (missing op or parent, the hop limit)."""

from __future__ import annotations

import numpy as np
import pytest

from dsprof.analyzers.precision import MATMUL_CONV, _kernels_with_matmul_op, _pair_encoder
from dsprof.analyzers.registry import Context
from dsprof.run import Run


def _dict_walk(ops: dict, kernels: list, max_hops: int) -> list:
    """The walk as it was: parents[(rank, id)] = (parent, name), climbed per kernel."""
    out = []
    for rank, op_id, name, dur in kernels:
        node = None if op_id is None else (rank, op_id)
        hops = 0
        while node is not None and node in ops and hops < max_hops:
            parent, op_name = ops[node]
            if op_name in MATMUL_CONV:
                break
            node = None if parent is None else (rank, parent)
            hops += 1
        found = node is not None and node in ops and ops[node][1] in MATMUL_CONV
        out.append((rank, name, dur, node if found else None))
    return out


def _run(ops: list[tuple[int, int, int | None, str]], kernels: list) -> Run:
    return Run.from_tables(
        ops={"rank": [o[0] for o in ops], "id": [o[1] for o in ops],
             "parent_id": [o[2] for o in ops], "name": [o[3] for o in ops],
             "start_ns": [0] * len(ops), "dur_ns": [1] * len(ops)},
        kernels={"rank": [k[0] for k in kernels], "op_id": [k[1] for k in kernels],
                 "name": [k[2] for k in kernels], "dur_ns": [k[3] for k in kernels],
                 "start_ns": [0] * len(kernels), "kind": ["compute"] * len(kernels)})


@pytest.mark.parametrize("base", [0, 2**61], ids=["ingest ids", "ids past the fast keys"])
def test_walk_matches_the_dict_walk(base):
    # GIVEN two ranks with the same ids: mm <- relu <- kernel, a chain into a missing parent,
    # an op with no parent, a kernel of a missing op, a kernel with no op, a cycle
    b = base
    ops = [(r, b + i, b + p if p is not None else None, n) for r in (0, 1) for i, p, n in (
        (0, None, "aten::linear"), (1, 0, "aten::addmm"), (2, 1, "aten::relu"),
        (3, 99, "aten::relu"), (4, None, "aten::add"), (5, 6, "aten::x"), (6, 5, "aten::y"))]
    kernels = [(r, None if i is None else b + i, f"k{i}", 1000 + (i or 0))
               for r in (0, 1) for i in (2, 1, 0, 3, 4, 42, None, 5)]
    run = _run(ops, kernels)
    # WHEN each kernel's matmul/conv op is looked up
    got = _kernels_with_matmul_op(Context(run), "", 64)
    # THEN it is what the per-kernel dict walk finds: the innermost (addmm, not linear)
    expected = _dict_walk({(r, i): (p, n) for r, i, p, n in ops}, kernels, 64)
    assert got == expected
    assert got[0][3] == (0, b + 1) and got[3][3] is None and got[7][3] is None


def test_the_op_at_the_hop_limit_is_still_looked_at():
    # a chain of 4 ops above the kernel's op, a matmul at the top
    ops = [(0, 0, None, "aten::mm")] + [(0, i, i - 1, "aten::view") for i in range(1, 5)]
    run = _run(ops, [(0, 4, "k", 10)])
    for limit, found in ((4, (0, 0)), (3, None)):
        assert _kernels_with_matmul_op(Context(run), "", limit)[0][3] == found


def test_pair_keys_are_equal_exactly_when_the_pairs_are():
    ranks = np.array([0, 0, 1, 1, 5], np.int64)
    for ids in (np.array([0, 1, 0, 1, 7], np.int64),
                np.array([-3, 2**61, -3, 2**61, 7], np.int64)):  # forces the exact fallback
        encode = _pair_encoder(ranks, ids)
        keys = encode(ranks, ids).tolist()
        pairs = list(zip(ranks.tolist(), ids.tolist()))
        for a in range(len(pairs)):
            for c in range(len(pairs)):
                assert (keys[a] == keys[c]) == (pairs[a] == pairs[c])
