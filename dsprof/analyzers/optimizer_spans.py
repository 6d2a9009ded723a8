"""The host time of an optimizer's update inside its ``Optimizer.step#`` spans, as
``fusion_optimizer`` prices it: the update's own extent, less a closure's forward and backward,
with preempted ops capped."""

from __future__ import annotations

import statistics
from collections import defaultdict

from dsprof.analyzers.registry import Context
from dsprof.metrics.ops.optable import OpTable


def closure_time(ctx: Context, table: OpTable, rows: list[tuple]) -> dict[tuple[int, int], float]:
    """Time inside each step span that is forward or backward, not the update: the
    closure of ``optimizer.step(closure)`` (Lightning, LBFGS), which dsprof brackets in a
    ``## closure ##`` span (forward), and in traces recorded elsewhere the module and
    backward spans run directly under the step span."""
    ids = [(r[0], r[2]) for r in rows]
    children = ctx.run.sql("""
        SELECT c.rank, c.parent_id, c.id, c.dur_ns FROM ops c
        WHERE c.phase IN ('forward', 'backward') AND (c.rank, c.parent_id) IN
              (SELECT * FROM (VALUES """ + ", ".join(f"({r}, {i})" for r, i in ids) + "))")
    out: dict[tuple[int, int], float] = defaultdict(float)
    for rank, parent, op_id, dur in children:
        out[(rank, parent)] += table.time_of(rank, op_id, dur)
    return out


def update_extent(ctx: Context, rows: list[tuple]) -> list[float]:
    """Host seconds of each span's update: from its first update op's start to its last
    one's end, less the forward and backward (a closure) run inside that interval.

    The span itself also holds what runs around the update: on a dsprof run its step hook,
    which in a profiled window advances torch.profiler (1.1 ms of audio_conv1d's 1.3 ms
    ``SGD.step`` span around 16 ``add_`` of 50 us in all), and the optimizer's own set-up
    before the loop, which a fused update runs too. The per-parameter Python between the
    update ops is inside the extent: it is what a fused update saves."""
    ids = [(r[0], r[2]) for r in rows]
    children = ctx.run.sql("""
        SELECT c.rank, c.parent_id, c.start_ns, c.start_ns + c.dur_ns,
               c.phase IN ('forward', 'backward') AS model FROM ops c
        WHERE c.dur_ns IS NOT NULL
          AND (c.cat = 'cpu_op' OR c.phase IN ('forward', 'backward'))
          AND (c.rank, c.parent_id) IN
              (SELECT * FROM (VALUES """ + ", ".join(f"({r}, {i})" for r, i in ids) + "))")
    update: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    model: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for rank, parent, start, end, is_model in children:
        (model if is_model else update)[(rank, parent)].append((start, end))
    out = []
    for key in ids:
        ops = update.get(key)
        if not ops:
            out.append(0.0)
            continue
        lo, hi = min(s for s, _ in ops), max(e for _, e in ops)
        inside = sum(max(0, min(e, hi) - max(s, lo)) for s, e in model.get(key, ()))
        out.append(max(0, hi - lo - inside) / 1e9)
    return out


def despiked(ctx: Context, rows: list[tuple], spans: list[float]) -> list[float]:
    """Host spans with each child op capped at 10x the median of its name.

    On a shared machine one ``mul_`` of 20 us can take 4 ms because the thread was
    preempted; that is not the optimizer's cost and a fused kernel would not save it.
    """
    ids = [(r[0], r[2]) for r in rows]
    children = ctx.run.sql("""
        SELECT c.rank, c.parent_id, c.name, c.dur_ns FROM ops c
        WHERE c.cat = 'cpu_op' AND (c.rank, c.parent_id) IN (SELECT * FROM (VALUES """
        + ", ".join(f"({r}, {i})" for r, i in ids) + "))")
    by_name: dict[str, list[int]] = defaultdict(list)
    for _, _, name, dur in children:
        by_name[name].append(dur)
    cap = {n: 10 * statistics.median(d) for n, d in by_name.items()}
    excess: dict[tuple[int, int], float] = defaultdict(float)
    for rank, parent, name, dur in children:
        excess[(rank, parent)] += max(0.0, dur - cap[name]) / 1e9
    return [max(0.0, t - excess[key]) for t, key in zip(spans, ids)]
