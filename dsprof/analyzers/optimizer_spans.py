"""The host time of an optimizer's update inside its ``Optimizer.step#`` spans, as
``fusion_optimizer`` prices it: the update's own extent, less a closure's forward and backward,
with preempted ops capped."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

from dsprof.analyzers.registry import Context
from dsprof.metrics.heap_steps import program_heap_rows
from dsprof.metrics.noise import has_column
from dsprof.metrics.ops.optable import OpTable
from dsprof.metrics.ops.optimizer_cost import (
    PAGE_FAULT_S,
    step_sqrt_excess_s,
    zero_free_sqrt_s,
)


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


@dataclass(frozen=True)
class LoopMeasure:
    """One optimizer class's update as the run recorded it: its spans (``rows``), full-speed
    time a step (``now``), ops, parameter bytes and tensors, step() calls a step, whether it
    runs foreach, on CPU, its recorded extent (``ceiling``), page faults, sqrt excess and
    unprofiled time a step (CPU), and the pointwise bandwidth and per-op overhead read from the
    run."""

    cls: str
    rows: list[tuple]
    now: float
    n_ops: float
    pbytes: int
    n_tensors: int
    n_optimizers: int
    foreach: bool
    cpu: bool
    ceiling: float
    faults: float | None
    sqrt_s: float
    unprofiled: float | None
    bandwidth: float
    bw_source: str
    overhead: float


# Unprofiled steps at least, for their median to be the update's pace rather than one step's luck.
MIN_PACE_STEPS = 3


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


def loop_faults(ctx: Context) -> float | None:
    """Mean minor page faults a step inside optimizer.step() (``steps.optimizer_faults``),
    over the steps after the first (the first allocates the optimizer's state), preferring
    the steps before the first profiler window (the profiler's buffers fault too, and once
    freed they change what later steps fault); None for imports
    and runs recorded before the column. The mean, not the median: whether malloc gives the
    temporaries back depends on its state, which varies (examples/periodic_eval.py under
    dsprof: 512 faults in 5 of 27 steps, none in the others; 448-480 in every step of the
    plain script, whose heap dsprof's own allocations do not shape), and the saving is the
    average step's."""
    if not has_column(ctx.run, "steps", "optimizer_faults"):
        return None
    # the steps that show the program's own heap (metrics/heap_steps.py: before the first
    # profiler window); any step after the first where a run has none of those
    quiet = [f for (f,) in program_heap_rows(ctx.run, "optimizer_faults", "optimizer_faults")]
    if not quiet:
        quiet = [f for (f,) in ctx.run.sql("""SELECT optimizer_faults FROM steps
                                              WHERE optimizer_faults IS NOT NULL AND step > 0""")]
    return float(statistics.fmean(quiet)) if quiet else None


def unprofiled_update_s(ctx: Context, rank: int) -> float | None:
    """Median thread CPU time a step inside optimizer.step() calls on ``rank``
    (``steps.optimizer_cpu_ns``), over the steps after the first that no profiler window held
    and dsprof did not otherwise disturb: what the update costs on this machine at this run's
    pace. Each step's own page faults are taken out before the median and the loop's mean
    faults (``loop_faults``, the program's heap) put back, so that the pace, which takes those
    faults out again, compares like with like: the steps after a window fault less than the
    program does (metrics/heap_steps.py). None for imports, runs recorded before the column,
    closures (null), and runs with fewer than MIN_PACE_STEPS such steps."""
    if not has_column(ctx.run, "steps", "optimizer_cpu_ns"):
        return None
    faulted = has_column(ctx.run, "steps", "optimizer_faults")
    rows = [int(cpu) - int(faults or 0) * PAGE_FAULT_S * 1e9 for cpu, faults in ctx.run.sql(f"""
        SELECT optimizer_cpu_ns, {"optimizer_faults" if faulted else "NULL"} FROM steps
        WHERE rank = {int(rank)} AND step > 0 AND NOT profiled AND disturbed_by IS NULL
          AND optimizer_cpu_ns IS NOT NULL""")]
    if len(rows) < MIN_PACE_STEPS:
        return None
    mean = loop_faults(ctx) if faulted else None
    return statistics.median(rows) / 1e9 + (mean * PAGE_FAULT_S if mean and mean >= 1 else 0.0)


# The ops that take a loop sqrt's output next, on the same elements (Adam/AdamW: ``/
# bias_correction2_sqrt``; Adagrad, RMSprop: ``.add_(eps)``), whose time prices the sqrt
# without zeros on this run's CPU (optimizer_cost.zero_free_sqrt_s).
SQRT_SIBLINGS = frozenset({"aten::div", "aten::div_", "aten::add", "aten::add_"})


def _first_numel(shapes: str | None) -> int | None:
    """Elements of an op's first input (``ops.input_shapes``), None when not recorded."""
    try:
        shape = json.loads(shapes)[0] if shapes else None
        return math.prod(int(d) for d in shape) if shape else None
    except (ValueError, TypeError, IndexError):
        return None


def loop_sqrt_excess(ctx: Context, table: OpTable, rows: list[tuple]) -> float:
    """The median a step, over the optimizer's spans ``rows``, of what its loop's
    ``aten::sqrt`` ops took beyond a sqrt of the same size with no zeros in it
    (``optimizer_cost.step_sqrt_excess_s``: none within SQRT_NOISE_RATIO of their zero-free
    price, which the next op on the same elements sets where it took more); 0.0 without such
    ops. Read from the profiled ops
    themselves: the penalty depends on how many of ``exp_avg_sq``'s values are zero and how
    they are mixed (unet: 42 % of its gradients zero), which no price from sizes knows."""
    if not rows:
        return 0.0
    ids = ", ".join(f"({int(r[0])}, {int(r[2])})" for r in rows)
    # each sqrt with the op that follows it in the same span (its sibling)
    found = ctx.run.sql(f"""
        SELECT rank, step, dur_ns, input_shapes, next_name, next_dur, next_shapes FROM (
            SELECT c.rank, c.step, c.name, c.dur_ns, c.input_shapes,
                   lead(c.name) OVER w AS next_name, lead(c.dur_ns) OVER w AS next_dur,
                   lead(c.input_shapes) OVER w AS next_shapes
            FROM ops c WHERE (c.rank, c.parent_id) IN (SELECT * FROM (VALUES {ids}))
            WINDOW w AS (PARTITION BY c.rank, c.parent_id ORDER BY c.start_ns, c.id))
        WHERE name = 'aten::sqrt'""")
    took: dict[tuple[int, int], float] = defaultdict(float)
    zero_free: dict[tuple[int, int], float] = defaultdict(float)
    for rank, step, dur, shapes, next_name, next_dur, next_shapes in found:
        numel = _first_numel(shapes)
        if numel is None:
            continue
        key = (int(rank), int(step or 0))
        took[key] += max(0.0, int(dur) / 1e9 - table.profiler_cost_s)
        sibling = (max(0.0, int(next_dur) / 1e9 - table.profiler_cost_s)
                   if next_name in SQRT_SIBLINGS and next_dur is not None
                   and _first_numel(next_shapes) == numel else None)
        zero_free[key] += zero_free_sqrt_s(numel, sibling)
    # within SQRT_NOISE_RATIO of the price, the sqrt ran slow, not on zeros: no excess
    per_step = {k: step_sqrt_excess_s(took[k], zero_free[k]) for k in took}
    if per_step and has_column(ctx.run, "steps", "optimizer_faults"):
        # a sqrt whose output malloc maps afresh faults its pages too (a 1 MiB exp_avg_sq: 256
        # faults, ~0.23 ms): those are priced as page faults; the step's faults are taken off
        # its sqrt excess first, so nothing is counted twice
        faults = {(int(r), int(s)): int(f) for r, s, f in ctx.run.sql(
            "SELECT rank, step, optimizer_faults FROM steps WHERE optimizer_faults IS NOT NULL")}
        per_step = {k: max(0.0, v - faults.get(k, 0) * PAGE_FAULT_S)
                    for k, v in per_step.items()}
    return float(statistics.median(per_step.values())) if per_step else 0.0
