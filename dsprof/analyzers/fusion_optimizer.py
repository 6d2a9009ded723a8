"""Optimizers that update parameters one tensor at a time.

Example:
    ``Optimizer.step#AdamW.step`` runs 14 ops per parameter (the for-loop implementation,
    torch's default on CPU) for 5.3 ms; ``fused=True`` does the same update in one pass.

Pattern: an ``Optimizer.step#<Class>.step`` span whose ops include neither ``aten::_fused_*``
nor ``aten::_foreach_*`` (the per-parameter loop), or ``_foreach_*`` ops for an optimizer that
has a fused implementation.

Algorithm: a fused update reads and writes each parameter's state once: for Adam/AdamW
param, grad, exp_avg and exp_avg_sq are read and param, exp_avg, exp_avg_sq written, 7 bytes
moved per parameter byte; SGD with momentum and Adagrad move 5. Parameter bytes are the
gradients accumulated in backward (``AccumulateGrad`` shapes), once per parameter however many
micro-batches a step accumulates. Predicted fused time is those
bytes over the bandwidth (see ``optable.OpTable.bandwidth``) plus one op's overhead; the
saving is the update's time now minus that. The update's time now is the median over the
profiled steps of, on a CPU run, the host time from its first update op's start to its last
one's end (the per-parameter loop with its Python, not the span around it, which on a dsprof
run also holds the step hook that advances the profiler: audio_conv1d's plain-SGD span took
1.3 ms, its 16 ``add_`` with their loop 0.05 ms, and the fused update measured 0.01-0.03 ms
faster), on a GPU run the kernels under the span, less what the profiler
adds per op recorded in it (``fullspeed.profiler_cost_per_op``), and on a CPU run less the
time by which any op exceeds 10x the median of its name (a preempted thread). The span used
to be scaled by full-speed over profiled step time, which made up for the step hook inside
it; on the update's own extent that scaling halved the estimate (multihead_attention: 0.25 ms
predicted, 0.40-0.42 ms measured in the thread's CPU time by ``benchmarks/advice.py``; fused
Adam saved 0.38-0.52 ms a step in the plain script, and 0.24 ms on its parameters alone: the
loop in training runs on cache-cold state). Forward and
backward run inside the span by ``optimizer.step(closure)`` (Lightning, LBFGS) are not the
optimizer's: their time is taken out of the span first.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.ops.fusion_chains import POINTWISE
from dsprof.metrics.ops.opbytes import op_io
from dsprof.metrics.ops.optable import OpTable

# Bytes moved per parameter byte by a fused update (reads + writes of param, grad, state).
FUSED_BYTES_PER_PARAM_BYTE = {"Adam": 7, "AdamW": 7, "SGD": 5, "Adagrad": 5}
MIN_SAVING_S = 50e-6
# torch.optim classes that take foreach=True (LBFGS and SparseAdam do not: never advise it)
FOREACH_OPTIMIZERS = {"Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "ASGD",
                      "NAdam", "RAdam", "RMSprop", "Rprop", "SGD"}


# What torch's fused kernel still costs on CPU, against the per-parameter loop it replaces
# (torch 2.13, one thread, this project's machine). AdamW, 4-64 fp32 tensors of 16 to 1M
# elements, plain script: fused/loop 0.17 on tiny tensors (3.5 us a tensor: the kernel's call
# per tensor, against 12 loop ops at ~1.75 us), 0.28-0.41 on 16k-262k elements; in training
# (benchmarks/advice.py, thread CPU time, interleaved arms) fused AdamW saved 0.33-0.35 ms of
# multihead_attention's loop, 0.25-0.29 of hand_attention's and 1.02 of hf_bert's (42 tensors),
# i.e. it still costs 0.35-0.45 of the loop (state cache-cold after forward and backward).
# Bytes at the bandwidth plus one op's overhead had predicted 26-40 % more saving than that.
# The run's own per-op overhead ``c`` cannot price the calls: profiled with memory recording
# on a loaded machine it read 55 us an op for hf_bert, 30x the plain-script dispatch.
FUSED_CPU_SHARE_OF_LOOP = 0.4
# Adam/AdamW's element work, compute-bound on large tensors: 0.68 ns an fp32 element.
FUSED_CPU_S_PER_PARAM_BYTE = 0.17e-9
# The optimizers whose fused CPU kernel those figures describe. Others (Adagrad, SGD) are still
# found, but their saving is unranked: recsys_embeddingbag's fused Adagrad was predicted 0.25 ms
# and saved 0.07 (benchmarks/advice.py), i.e. it kept ~0.8 of the loop, not 0.4.
CPU_CALIBRATED = ("Adam", "AdamW")


def fused_cpu_s(cls: str, pbytes: int, factor: int, bandwidth: float, loop_s: float) -> float:
    """Predicted time of the fused update on CPU: the largest of ``FUSED_CPU_SHARE_OF_LOOP`` of
    the loop's own measured full-speed time ``loop_s``, its bytes at the measured bandwidth,
    and (Adam/AdamW) its calibrated compute cost."""
    compute = pbytes * FUSED_CPU_S_PER_PARAM_BYTE if cls in ("Adam", "AdamW") else 0.0
    return max(FUSED_CPU_SHARE_OF_LOOP * loop_s, factor * pbytes / bandwidth, compute)


class OptimizerFusionAnalyzer(Analyzer):
    name = "fusion_optimizer"
    requires = ("ops",)

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.run.sql("""SELECT EXISTS (SELECT 1 FROM ops
                              WHERE name LIKE 'Optimizer.step#%')""")[0][0]:
            return "no Optimizer.step spans in the trace (no torch.optim optimizer stepped)"
        return None

    def run(self, ctx: Context) -> list[Finding]:
        table = ctx.op_table
        bandwidth, bw_source = table.bandwidth(POINTWISE)
        if bandwidth is None:
            return []
        overhead = table.op_overhead_s(POINTWISE)
        spans = ctx.run.sql(f"""
            SELECT o.rank, o.step, o.id, o.name, o.dur_ns, o.start_ns,
                   count(c.id) AS n_ops,
                   count(c.id) FILTER (WHERE c.name LIKE 'aten::_fused_%') AS n_fused,
                   count(c.id) FILTER (WHERE c.name LIKE 'aten::_foreach_%') AS n_foreach,
                   (SELECT count(*) FROM ops d WHERE d.rank = o.rank AND d.thread = o.thread
                      AND d.cat = 'cpu_op' AND d.start_ns >= o.start_ns
                      AND d.start_ns < o.start_ns + o.dur_ns
                      AND d.phase NOT IN ('forward', 'backward')) AS n_recorded
            FROM ops o LEFT JOIN ops c ON c.rank = o.rank AND c.parent_id = o.id
                                          AND c.cat = 'cpu_op'
                                          AND c.phase NOT IN ('forward', 'backward')
            WHERE o.name LIKE 'Optimizer.step#%' {table.steps_filter}
            GROUP BY ALL ORDER BY o.rank, o.step, o.start_ns""")
        params = self._param_bytes(ctx, table)
        by_class: dict[str, list[tuple]] = defaultdict(list)
        for row in spans:
            cls = row[3].removeprefix("Optimizer.step#").split(".")[0]
            by_class[cls].append(row)
        findings = []
        for cls, rows in sorted(by_class.items()):
            n_fused = sum(r[7] for r in rows)
            n_foreach = sum(r[8] for r in rows)
            if n_fused or (n_foreach and cls not in FUSED_BYTES_PER_PARAM_BYTE):
                continue
            steps = len(rows)
            # Full-speed time: the profiler's cost for every op recorded in the span taken out,
            # and preemption (see _despiked) left out.
            if table.device:
                inner = self._closure_time(ctx, table, rows)
                spans = [max(0.0, table.time_of(r[0], r[2], r[4]) - inner.get((r[0], r[2]), 0.0))
                         for r in rows]
            else:
                spans = self._despiked(ctx, rows, self._update_extent(ctx, rows))
            now = statistics.median(max(0.0, t - r[9] * table.profiler_cost_s)
                                    for t, r in zip(spans, rows))
            n_ops = sum(r[6] for r in rows) / steps
            rank0 = rows[0][0]
            pbytes, n_tensors = params.get(rank0, (0, 0))
            # At most two ops per parameter (plain SGD: one add_ each): the loop already
            # streams every byte once, as a fused kernel would; only launches can go, and
            # on CPU torch's fused SGD measured slower than this loop (benchmarks/advice.py).
            if n_tensors and n_ops <= 2 * n_tensors and (n_ops - 1) * overhead < MIN_SAVING_S:
                continue
            finding = self._finding(cls, rows, now, n_ops, pbytes, n_foreach > 0, bandwidth,
                                    bw_source, overhead, n_tensors, cpu=not table.device)
            if finding is not None:
                findings.append(finding)
        return findings

    @staticmethod
    def _closure_time(ctx: Context, table: OpTable, rows: list[tuple]) -> dict[tuple[int, int], float]:
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

    @staticmethod
    def _update_extent(ctx: Context, rows: list[tuple]) -> list[float]:
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

    @staticmethod
    def _despiked(ctx: Context, rows: list[tuple], spans: list[float]) -> list[float]:
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

    @staticmethod
    def _param_bytes(ctx: Context, table: OpTable) -> dict[int, tuple[int, int]]:
        """Bytes and number of the parameters that got a gradient in one backward pass, per
        rank.

        Every backward runs one ``AccumulateGrad`` per parameter, so a step of N accumulated
        micro-batches (nanoGPT: 40) has each parameter's N times: the multiset of
        (shape, dtype) is N copies of one backward's, and N is the greatest common divisor of
        the counts. The optimizer updates each parameter once per step.
        """
        out: dict[int, tuple[int, int]] = {}
        rows = ctx.run.sql(f"""
            SELECT o.rank, o.step, o.input_shapes, o.dtypes, count(*) FROM ops o
            WHERE o.name = 'torch::autograd::AccumulateGrad' {table.steps_filter}
            GROUP BY ALL""")
        kinds: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        for rank, step, shapes, dtypes, n_calls in rows:
            io = op_io(shapes, dtypes)
            nbytes = 0
            if io is not None and io.inputs:
                shape, size = io.inputs[0]
                nbytes = size
                for d in shape:
                    nbytes *= d
            kinds[(rank, step)].append((int(n_calls), nbytes))
        for (rank, _step), per_kind in kinds.items():
            passes = math.gcd(*(n for n, _ in per_kind))
            b = sum(n * nbytes for n, nbytes in per_kind) // passes
            if b > out.get(rank, (0, 0))[0]:
                out[rank] = (b, sum(n for n, _ in per_kind) // passes)
        return out

    def _finding(self, cls: str, rows: list[tuple], now: float, n_ops: float, pbytes: int,
                 foreach: bool, bandwidth: float, bw_source: str,
                 overhead: float, n_tensors: int = 0, cpu: bool = False) -> Finding | None:
        factor = FUSED_BYTES_PER_PARAM_BYTE.get(cls)
        first = rows[0]
        evidence = (Evidence(text=f"{first[3]}: {n_ops:.0f} ops, {now * 1e3:.3f} ms per step",
                             rank=first[0], step=first[1], start_ns=first[5],
                             end_ns=first[5] + first[4], op_ids=(first[2],), value=now),)
        impl = "foreach" if foreach else "per-parameter loop"
        if factor is not None and pbytes:
            predicted = factor * pbytes / bandwidth + overhead
            cpu_note = ""
            if cpu:
                predicted = fused_cpu_s(cls, pbytes, factor, bandwidth, now)
                cpu_note = (
                    f" On CPU the fused kernel still costs a share of the loop (a call per "
                    f"tensor, {n_tensors} here, and compute-bound arithmetic): predicted the "
                    f"largest of {FUSED_CPU_SHARE_OF_LOOP:g} x the loop's "
                    f"{now * 1e3:.3f} ms, those bytes at the bandwidth, and "
                    f"{FUSED_CPU_S_PER_PARAM_BYTE * 1e12:.0f} ps per parameter byte (Adam) "
                    f"= {predicted * 1e3:.3f} ms.")
                if cls not in CPU_CALIBRATED:
                    cpu_note += (f" Impact unknown; verify to measure: that share was measured "
                                 f"for {'/'.join(sorted(CPU_CALIBRATED))} only, and {cls}'s "
                                 "fused kernel may keep more of the loop.")
            saving = now - predicted
            if saving < MIN_SAVING_S:
                return None
            return Finding(
                analyzer=self.name, kind="fusion.optimizer", key=cls,
                title=f"Use {cls}(..., fused=True): one pass over the parameters",
                saving_s=saving, confidence="medium",
                explanation=(
                    f"{cls}.step runs the {impl} implementation: {n_ops:.0f} ops taking "
                    f"{now * 1e3:.3f} ms per step at full speed (the profiler's cost per "
                    f"recorded op taken out). The fused kernel reads and writes "
                    f"{factor} bytes per parameter byte ({pbytes / 2**20:.2f} MiB of "
                    f"parameters with gradients): {factor * pbytes / 2**20:.1f} MiB at "
                    f"{bandwidth / 1e9:.1f} GB/s ({bw_source})"
                    + (f" = {predicted * 1e3:.3f} ms." if not cpu_note else "." + cpu_note)),
                evidence=evidence,
                fix=f"optimizer = torch.optim.{cls}(model.parameters(), ..., fused=True)",
                apply={"DS_OPTIMIZER_FUSED": "1"},
                verify="dsprof verify RUN ID   (reruns the script with DS_OPTIMIZER_FUSED=1)",
                data={"optimizer": cls, "implementation": impl, "ops_per_step": n_ops,
                      "param_bytes": pbytes, "param_tensors": n_tensors,
                      "predicted_fused_s": predicted,
                      **({"impact_unknown": f"fused {cls} uncalibrated on CPU"}
                         if cpu and cls not in CPU_CALIBRATED else {})})
        if foreach or cls not in FOREACH_OPTIMIZERS:
            return None
        n_params = max(1, round(n_ops / 10))
        saving = max(0.0, (n_ops - n_ops / n_params) * overhead)
        if saving < MIN_SAVING_S:
            return None
        return Finding(
            analyzer=self.name, kind="fusion.optimizer", key=cls,
            title=f"Use {cls}(..., foreach=True): batch the per-parameter ops",
            saving_s=saving, confidence="low",
            explanation=(f"{cls}.step runs {n_ops:.0f} ops per step, one set per parameter; "
                         f"foreach batches them, removing about {overhead * 1e6:.1f} us of "
                         "dispatch per op (the arithmetic stays)."
                         + (" Impact unknown; verify to measure: on a CPU run the per-op "
                            "dispatch cost read from the profiled steps holds the profiler's "
                            "own cost and the waits of a loaded machine (mobilenet_v3's "
                            "foreach RMSprop: predicted 1.92 ms, saved 0.36)." if cpu else "")),
            evidence=evidence,
            fix=f"optimizer = torch.optim.{cls}(model.parameters(), ..., foreach=True)",
            apply={"DS_OPTIMIZER_FOREACH": "1"},
            verify="dsprof verify RUN ID   (reruns the script with DS_OPTIMIZER_FOREACH=1)",
            data={"optimizer": cls, "implementation": impl, "ops_per_step": n_ops,
                  **({"impact_unknown": "per-op dispatch cost on CPU"} if cpu else {})})
