"""DDP gradient buckets: which gradients went into which all-reduce, and how big each was.

DistributedDataParallel's reducer records, in backward, one
``torch::distributed::reducer::mul_out`` op per parameter as its gradient becomes ready
(division by the world size, with the gradient's shape), and issues a ``c10d::allreduce_`` of
the flat bucket when the bucket is full. So the gradients of a bucket are the ``mul_out`` ops
of a rank's thread between the previous all-reduce and this one (an ASOF join in DuckDB), in
backward order; the bucket's size is the all-reduce's element count (its ``Input Dims``).
Parameter names are not in the trace, only shapes; buckets are numbered per rank and step in
the order they were issued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dsprof.vocabulary import element_bytes


@dataclass(frozen=True)
class Bucket:
    rank: int
    step: int
    index: int
    numel: int | None
    """Elements of the flat all-reduce buffer."""
    nbytes: int | None
    grads: int
    """Number of gradients in it."""
    grad_shapes: tuple[tuple[int, ...], ...]
    """Shapes of the gradients that filled it, in the order they became ready."""
    start_ns: int
    op_id: int


def buckets(con: Any) -> list[Bucket]:
    """Every DDP all-reduce of every rank and step, with the gradients that filled it."""
    tables = {t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables").fetchall()}
    if "ops" not in tables:
        return []
    # without recorded shapes, the collective's own message size (a comms row issued inside
    # the all-reduce call) gives the bucket's bytes
    sent = ("(SELECT max(c.in_bytes) FROM comms c WHERE c.rank = a.rank AND c.call_ns "
            "BETWEEN a.start_ns AND a.end_ns)") if "comms" in tables else "NULL::BIGINT"
    rows = con.execute(f"""
        WITH ar AS (
            SELECT rank, step, thread, id, start_ns, start_ns + dur_ns AS end_ns, input_shapes,
                   row_number() OVER (PARTITION BY rank, step ORDER BY start_ns, id) - 1 AS idx,
                   lag(start_ns, 1, -1) OVER (PARTITION BY rank, thread ORDER BY start_ns, id)
                       AS prev_ns
            FROM ops
            WHERE name = 'c10d::allreduce_' AND phase = 'backward' AND step IS NOT NULL),
        grads AS (
            SELECT rank, thread, start_ns, input_shapes, dtypes FROM ops
            WHERE name = 'torch::distributed::reducer::mul_out'),
        joined AS (
            SELECT a.rank, a.step, a.idx, a.id, a.start_ns, a.input_shapes AS bucket_dims,
                   g.input_shapes AS grad_dims, g.dtypes AS grad_type, g.start_ns AS g_start,
                   {sent} AS sent_bytes
            FROM ar a LEFT JOIN grads g
              ON g.rank = a.rank AND g.thread = a.thread
             AND g.start_ns < a.start_ns AND g.start_ns > a.prev_ns)
        SELECT rank, step, idx, id, start_ns, bucket_dims,
               list(grad_dims ORDER BY g_start) FILTER (WHERE grad_dims IS NOT NULL),
               any_value(grad_type), count(g_start), any_value(sent_bytes)
        FROM joined GROUP BY rank, step, idx, id, start_ns, bucket_dims
        ORDER BY rank, step, idx""").fetchall()
    out = []
    for rank, step, idx, op_id, start, dims, grads, gtype, n_grads, sent in rows:
        numel = _first_numel(dims)
        size = element_bytes(_first(gtype) or "float") or 4
        shapes = tuple(tuple(json.loads(g)[0]) for g in (grads or []) if g)
        nbytes = numel * size if numel is not None else (int(sent) if sent else None)
        out.append(Bucket(int(rank), int(step), int(idx), numel, nbytes, int(n_grads), shapes,
                          int(start), int(op_id)))
    return out


def _first(text: Any) -> str | None:
    try:
        values = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return None
    return next((v for v in values if isinstance(v, str) and v), None)


def _first_numel(text: Any) -> int | None:
    try:
        dims = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return None
    for entry in dims:
        if entry and isinstance(entry[0], list):
            n = 1
            for d in entry[0]:
                n *= int(d)
            return n
    return None
