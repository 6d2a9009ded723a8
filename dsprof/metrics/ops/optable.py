"""The op sequences the fusion analyzers read, with the time each op costs.

A *top-level* op is a ``cpu_op`` whose parent is not another ``cpu_op`` (it is called from
Python, under a module span or an annotation), so ``aten::add`` counts once and its
``aten::empty`` child does not. Forward sequences are the top-level forward ops of one
(rank, thread, step) in start order. An op's *time* is its host duration on a CPU run, and
the summed duration of the kernels launched under it on a run with device kernels (the host
side of a GPU op is launch overhead, which the device hides while it is busy).

The backward cost of a forward op is the ``autograd::engine::evaluate_function`` node with the
same autograd ``seq`` number: the ops its backward runs, less any forward that activation
checkpointing re-ran inside it (:mod:`recompute`). The profiler gives every op the sequence
number autograd will give its *next* node, so the ops that create none (on tensors that need
no gradient: a SimCLR augmentation's mul/add/mul/clamp before the encoder) carry the number of
the next op that does: only the last top-level forward op with a number owns its backward
(:meth:`OpTable._owns_backward`; the augmentation was charged the first conv's 3 ms backward).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

from dsprof.metrics.fullspeed import profiler_cost_per_op
from dsprof.metrics.ops.opbytes import DEFAULT_OP_OVERHEAD_S, OpIO, op_io
from dsprof.metrics.ops.recompute import find_recompute
from dsprof.run import Run


class Context(Protocol):
    """What an OpTable reads (``analyzers.registry.Context`` has it): a metric never imports
    the analyzers."""

    run: Run
    meta: dict[str, Any]

    @property
    def profiled_steps(self) -> list[tuple[int, int]]: ...

    def nonempty(self, table: str) -> bool: ...


@dataclass(frozen=True)
class Op:
    rank: int
    step: int | None
    id: int
    name: str
    start_ns: int
    end_ns: int
    time_s: float
    module: str | None
    io: OpIO | None
    seq: int | None  # the autograd sequence number recorded (its node's only if it owns it)
    dtypes: str | None

    @property
    def short(self) -> str:
        return self.name.removeprefix("aten::")


def _pack(rank, op_id):
    """(rank, op id) as one sortable int64: ids within +-2**40, ranks below 2**21."""
    return rank * (1 << 41) + op_id + (1 << 40)


class OpTable:
    """Forward op sequences, backward times by seq, and per-op overhead, for one run."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.device = ctx.nonempty("kernels") and bool(ctx.run.sql(
            "SELECT EXISTS (SELECT 1 FROM kernels WHERE kind = 'compute')")[0][0])
        self.steps_filter = self._steps_filter()
        # op_io is pure and a model repeats the same shapes every step: parse each distinct
        # (shapes, dtypes) once (OpIO is frozen, so ops can share one)
        self._io = functools.lru_cache(maxsize=None)(op_io)
        self._device_time: dict[tuple[int, int], float] = (
            self._kernel_time_by_op() if self.device else {})
        self.sequences = self._forward_sequences()
        # (rank, seq) -> the last top-level forward op that carried it: the node's creator
        self._seq_owner = {(op.rank, op.seq): op.id for ops in self.sequences
                           for op in ops if op.seq is not None}
        self.recompute = find_recompute(ctx.run, self.steps_filter)
        self.backward_s = self._backward_by_seq()
        self._backward_ops: dict[tuple[int, int], list[Op]] | None = None
        # What recording adds to each op (see fullspeed): taken out of per-op savings.
        self.profiler_cost_s = 0.0 if self.device else profiler_cost_per_op(ctx.run)
        self.called_modules = frozenset(r[0] for r in ctx.run.sql(
            "SELECT DISTINCT name FROM ops WHERE cat = 'module'"))
        # Totals are divided by this to give per-step (and per-rank) figures.
        self.n_steps = len(ctx.profiled_steps) or max(
            1, len({(op.rank, op.step) for seq in self.sequences for op in seq}))

    def _steps_filter(self) -> str:
        if self.ctx.profiled_steps:
            return ("AND o.step IN (SELECT s.step FROM steps s WHERE s.profiled "
                    "AND s.rank = o.rank)")
        return ""

    def _kernel_time_by_op(self) -> dict[tuple[int, int], float]:
        """Device seconds per (rank, op id), credited to the op and all its ancestors (at most
        64 levels up). The walk up the tree runs one level at a time over all ops at once
        (numpy): a Python loop over every op's ancestors cost more than the queries."""
        import numpy as np

        ops = self.ctx.run.con.execute(
            "SELECT rank, id, parent_id FROM ops ORDER BY rank, id").fetchnumpy()
        groups = self.ctx.run.con.execute("""
                SELECT rank, op_id, sum(dur_ns) AS dur FROM kernels
                WHERE op_id IS NOT NULL AND kind = 'compute' GROUP BY rank, op_id""").fetchnumpy()
        key = _pack(np.asarray(ops["rank"], np.int64), np.asarray(ops["id"], np.int64))
        parent_col = ops["parent_id"]
        has_parent = ~np.ma.getmaskarray(parent_col)
        parent = np.where(has_parent, np.ma.getdata(parent_col).astype(np.int64), 0)
        g_rank = np.asarray(groups["rank"], np.int64)
        node = np.asarray(groups["op_id"], np.int64)
        secs = np.asarray(groups["dur"], np.float64) / 1e9
        credit_rank, credit_node, credit_s = [], [], []
        live = np.ones(len(node), bool)
        for _ in range(64):
            credit_rank.append(g_rank[live])
            credit_node.append(node[live])
            credit_s.append(secs[live])
            if not len(key):
                break
            # the parent of each node still walking (a node missing from ops ends its walk)
            want = _pack(g_rank, node)
            pos = np.minimum(np.searchsorted(key, want), len(key) - 1)
            live &= (key[pos] == want) & has_parent[pos]
            if not live.any():
                break
            node = np.where(live, parent[pos], node)
        credited = _pack(np.concatenate(credit_rank), np.concatenate(credit_node))
        keys, where = np.unique(credited, return_inverse=True)
        seconds = np.bincount(where, weights=np.concatenate(credit_s), minlength=len(keys))
        return dict(zip(zip((keys >> 41).tolist(), ((keys & ((1 << 41) - 1)) - (1 << 40)).tolist()),
                        seconds.tolist()))

    def time_of(self, rank: int, op_id: int, dur_ns: int) -> float:
        if self.device:
            return self._device_time.get((rank, op_id), 0.0)
        return dur_ns / 1e9

    def _forward_sequences(self) -> list[list[Op]]:
        rows = self.ctx.run.sql(f"""
            SELECT o.rank, o.thread, o.step, o.id, o.name, o.start_ns, o.dur_ns, o.module,
                   o.input_shapes, o.dtypes, o.seq
            FROM ops o LEFT JOIN ops p ON p.rank = o.rank AND p.id = o.parent_id
            WHERE o.cat = 'cpu_op' AND o.phase = 'forward'
              AND (p.cat IS NULL OR p.cat <> 'cpu_op') {self.steps_filter}
            ORDER BY o.rank, o.thread, o.step, o.start_ns, o.id""")
        seqs: dict[tuple[int, int, int | None], list[Op]] = {}
        for rank, thread, step, op_id, name, start, dur, module, shapes, dtypes, seq in rows:
            op = Op(int(rank), step, int(op_id), name, int(start), int(start) + int(dur),
                    self.time_of(rank, op_id, dur), module, self._io(shapes, dtypes), seq, dtypes)
            seqs.setdefault((rank, thread, step), []).append(op)
        return list(seqs.values())

    def _backward_ops_by_seq(self) -> dict[tuple[int, int], list[Op]]:
        """The aten ops each backward node runs (grandchildren of its evaluate_function span:
        ``evaluate_function: MulBackward0`` -> ``MulBackward0`` -> ``aten::mul``)."""
        rows = self.ctx.run.sql(f"""
            SELECT o.rank, o.seq, c.id, c.name, c.start_ns, c.dur_ns, c.input_shapes, c.dtypes
            FROM ops o JOIN ops b ON b.rank = o.rank AND b.parent_id = o.id
                       JOIN ops c ON c.rank = b.rank AND c.parent_id = b.id
            WHERE o.phase = 'backward' AND o.seq IS NOT NULL AND c.cat = 'cpu_op'
              AND o.name LIKE 'autograd::engine::evaluate_function:%' {self.steps_filter}""")
        out: dict[tuple[int, int], list[Op]] = defaultdict(list)
        rerun = self.recompute.inside
        for rank, seq, op_id, name, start, dur, shapes, dtypes in rows:
            if (int(rank), int(op_id)) in rerun:
                continue  # the forward that checkpointing re-ran, not this node's backward
            out[(int(rank), int(seq))].append(Op(
                int(rank), None, int(op_id), name, int(start), int(start) + int(dur),
                self.time_of(rank, op_id, dur), None, self._io(shapes, dtypes), None, dtypes))
        return out

    def backward_ops(self, ops: list[Op]) -> list[Op]:
        if self._backward_ops is None:
            self._backward_ops = self._backward_ops_by_seq()
        return [b for op in ops if op.seq is not None and self._owns_backward(op)
                for b in self._backward_ops.get((op.rank, op.seq), ())]

    def _owns_backward(self, op: Op) -> bool:
        """Whether the backward node with ``op``'s seq is ``op``'s: an op that created no node
        shares its number with the next op that did (see the module's docstring)."""
        return op.seq is not None and self._seq_owner.get((op.rank, op.seq)) == op.id

    def _backward_by_seq(self) -> dict[tuple[int, int], float]:
        """Each backward node's time, less the forward it re-ran for activation checkpointing
        (:mod:`recompute`)."""
        rows = self.ctx.run.sql(f"""
            SELECT o.rank, o.seq, o.id, o.dur_ns FROM ops o
            WHERE o.phase = 'backward' AND o.seq IS NOT NULL
              AND o.name LIKE 'autograd::engine::evaluate_function:%' {self.steps_filter}""")
        out: dict[tuple[int, int], float] = defaultdict(float)
        rerun = self.recompute
        for rank, seq, op_id, dur in rows:
            node = (int(rank), int(op_id))
            if node not in rerun.window_ns:
                own = self.time_of(rank, op_id, dur)
            elif self.device:
                own = self.time_of(rank, op_id, dur) - sum(
                    self.time_of(r, i, d) for r, i, d in rerun.outermost[node])
            else:
                own = (dur - rerun.window_ns[node]) / 1e9
            out[(int(rank), int(seq))] += max(0.0, own)
        return out

    def backward_time(self, ops: list[Op]) -> float:
        return sum(self.backward_s.get((op.rank, op.seq), 0.0) for op in ops
                   if op.seq is not None and self._owns_backward(op))

    def op_overhead_s(self, pointwise: frozenset[str]) -> float:
        """Per-op fixed cost: the median time of top-level pointwise ops on at most 4096
        elements (all overhead, no bandwidth). Zero on device runs, where the device hides
        launch cost while it is busy."""
        if self.device:
            return 0.0
        small = sorted(op.time_s for seq in self.sequences for op in seq
                       if op.name in pointwise and op.io is not None and 0 < op.io.out_numel <= 4096)
        return small[len(small) // 2] if small else DEFAULT_OP_OVERHEAD_S

    def bandwidth(self, pointwise: frozenset[str]) -> tuple[float | None, str]:
        """Bytes per second for memory traffic, and where the figure comes from.

        A CPU run uses the copy benchmark its session recorded (meta ``host_bandwidth``);
        otherwise (device runs, imported traces) the rate the trace's own large pointwise ops
        achieved: the 90th percentile of bytes / time over those moving at least 1 MiB.
        """
        measured = (self.ctx.meta.get("host_bandwidth") or {}).get("bytes_per_s")
        if measured and not self.device:
            return float(measured), "copy benchmark at session start"
        rates = sorted(op.io.bytes / op.time_s for seq in self.sequences for op in seq
                       if op.name in pointwise and op.io is not None and op.time_s > 0
                       and op.io.bytes >= 1 << 20)
        if not rates:
            return None, "no pointwise op of 1 MiB or more to estimate it from"
        return rates[min(len(rates) - 1, int(0.9 * len(rates)))], \
            f"90th percentile of {len(rates)} large pointwise ops in the trace"
