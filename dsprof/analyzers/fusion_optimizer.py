"""Optimizers that update parameters one tensor at a time.

Example:
    ``Optimizer.step#AdamW.step`` runs 14 ops per parameter (the for-loop implementation,
    torch's default on CPU) for 5.3 ms; ``fused=True`` does the same update in one pass.

Pattern: an ``Optimizer.step#<Class>.step`` span whose ops include neither ``aten::_fused_*``
nor ``aten::_foreach_*`` (the per-parameter loop), or ``_foreach_*`` ops for an optimizer that
has a fused implementation.

Algorithm: the spans of one optimizer class are summed per (rank, step): a GAN steps two
Adams (generator, discriminator) and ``DS_OPTIMIZER_FUSED=1`` fuses both. The parameters an
update touches are read from its own ops (the op called once per parameter, see
``_updated_params``), not from backward's ``AccumulateGrad`` shapes, which count the
discriminator's parameters twice in a GAN step and do not say which optimizer owns them.

The update's time now is the median over the profiled steps of, on a CPU run, the host time
from its first update op's start to its last one's end (the per-parameter loop with its
Python, not the span around it, which on a dsprof run also holds the step hook that advances
the profiler: audio_conv1d's plain-SGD span took 1.3 ms, its 16 ``add_`` with their loop
0.05 ms), less the time by which any op exceeds 10x the median of its name (a preempted
thread); on a GPU run the kernels under the span; less what the profiler adds per op recorded
in it (``fullspeed.profiler_cost_per_op``). Forward and backward run inside the span by
``optimizer.step(closure)`` (Lightning, LBFGS) are not the optimizer's: their time is taken
out of the span first.

Saving, GPU run: a fused update reads and writes each parameter's state once (Adam/AdamW:
param, grad, exp_avg, exp_avg_sq read, three written, 7 bytes moved per parameter byte; SGD
with momentum and Adagrad 5); predicted fused time is those bytes over the bandwidth (see
``optable.OpTable.bandwidth``) plus one op's overhead, the saving the time now minus that.

Saving, CPU run: both sides are priced from what the update touches (``loop_cpu_s``,
``fused_cpu_s``, calibrated by benchmarks/fused_optimizer_cpu.py), the loop capped by its
recorded extent (the profiler's cost included). The profiled time itself is no measure of the loop: profiling inflated it by
4-97 % over the plain script's loop, unevenly across scripts and runs.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

from dsprof.analyzers.frameworks import frameworks
from dsprof.analyzers.fused_update_cpu import price_cpu_update
from dsprof.analyzers.optimizer_spans import (
    LoopMeasure,
    closure_time,
    despiked,
    loop_faults,
    loop_sqrt_excess,
    unprofiled_update_s,
    update_extent,
)
from dsprof.analyzers.optimizer_switches import optimizer_switch_fix
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.analyzers.step_words import StepWords
from dsprof.findings import SAVING_CLOCK, THREAD_CPU, Evidence, Finding
from dsprof.metrics.ops.fusion_chains import POINTWISE
from dsprof.metrics.ops.opbytes import op_io
from dsprof.metrics.ops.optable import OpTable
from dsprof.metrics.ops.optimizer_cost import (
    CPU_CALIBRATED,
    loop_cpu_s,
)

# Bytes moved per parameter byte by a fused update (reads + writes of param, grad, state).
FUSED_BYTES_PER_PARAM_BYTE = {"Adam": 7, "AdamW": 7, "SGD": 5, "Adagrad": 5}
MIN_SAVING_S = 50e-6
# torch.optim classes that take foreach=True (LBFGS and SparseAdam do not: never advise it)
FOREACH_OPTIMIZERS = {"Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "ASGD",
                      "NAdam", "RAdam", "RMSprop", "Rprop", "SGD"}


@dataclass
class StepUpdate:
    """One step's update by the optimizers of one class on one rank: a GAN steps two Adams
    (generator, discriminator) and ``DS_OPTIMIZER_FUSED=1`` fuses both, so their spans add up."""

    rank: int
    step: int
    seconds: float = 0.0
    n_ops: int = 0
    param_bytes: int = 0
    n_tensors: int = 0
    n_optimizers: int = 0


class OptimizerFusionAnalyzer(Analyzer):
    name = "fusion_optimizer"
    requires = ("ops",)

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.run.sql("""SELECT EXISTS (SELECT 1 FROM ops
                              WHERE name LIKE 'Optimizer.step#%')""")[0][0]:
            if (ctx.meta.get("compile") or {}).get("used"):
                # a step torch.compile compiled drops the record_function torch.optim wraps it
                # in ("Profiler record function ... will be ignored"): its update is inductor's
                # generated code, which already fuses the per-parameter ops
                return ("no Optimizer.step spans in the trace: torch.compile was in use, and an "
                        "optimizer step it compiles records none (inductor generates that "
                        "update, so there is no per-parameter loop to fuse), or no torch.optim "
                        "optimizer stepped")
            return "no Optimizer.step spans in the trace (no torch.optim optimizer stepped)"
        return None

    def run(self, ctx: Context) -> list[Finding]:
        findings = []
        for m in self.loops(ctx):
            finding = self._finding(m.cls, m.rows, m.now, m.n_ops, m.pbytes, m.foreach,
                                    m.bandwidth, m.bw_source, m.overhead, m.n_tensors,
                                    cpu=m.cpu, faults=m.faults, sqrt_s=m.sqrt_s,
                                    unprofiled=m.unprofiled, n_optimizers=m.n_optimizers,
                                    lightning="lightning" in frameworks(ctx),
                                    ceiling=m.ceiling, words=ctx.words)
            if finding is not None:
                flag = "fused" if "DS_OPTIMIZER_FUSED" in (finding.apply or {}) else "foreach"
                fix = optimizer_switch_fix(ctx, m.cls, flag)
                findings.append(dataclasses.replace(finding, fix=fix) if fix else finding)
        return findings

    def loops(self, ctx: Context) -> list[LoopMeasure]:
        """Every optimizer class's update that a fused or foreach kernel could replace, as
        measured in the run."""
        table = ctx.op_table
        bandwidth, bw_source = table.bandwidth(POINTWISE)
        if bandwidth is None:
            return []
        overhead = table.op_overhead_s(POINTWISE)
        loops: list[LoopMeasure] = []
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
        updated = self._updated_params(ctx, spans)
        by_class: dict[str, list[tuple]] = defaultdict(list)
        for row in spans:
            cls = row[3].removeprefix("Optimizer.step#").split(".")[0]
            by_class[cls].append(row)
        for cls, rows in sorted(by_class.items()):
            n_fused = sum(r[7] for r in rows)
            n_foreach = sum(r[8] for r in rows)
            if n_fused or (n_foreach and cls not in FUSED_BYTES_PER_PARAM_BYTE):
                continue
            # Full-speed time of each span: the profiler's cost for every op recorded in it
            # taken out, and (CPU) preemption (see optimizer_spans.despiked) left out.
            if table.device:
                inner = closure_time(ctx, table, rows)
                times = [max(0.0, table.time_of(r[0], r[2], r[4]) - inner.get((r[0], r[2]), 0.0))
                         for r in rows]
            else:
                times = despiked(ctx, rows, update_extent(ctx, rows))
            # the loop's recorded extent, profiler's cost and all: at least the loop's own time
            # (on a loaded machine the per-op cost read from the run grows, and the net time
            # below can fall under the loop's: vit 0.62 ms against 1.2 ms in the plain script)
            ceiling = statistics.median(s.seconds for s in self._per_step(rows, times, updated))
            times = [max(0.0, t - r[9] * table.profiler_cost_s) for t, r in zip(times, rows)]
            step = self._per_step(rows, times, updated)
            now = statistics.median(s.seconds for s in step)
            n_ops = statistics.median(s.n_ops for s in step)
            rank0 = rows[0][0]
            mine = [s for s in step if s.rank == rank0]
            top = max(mine, key=lambda s: (s.param_bytes, s.n_optimizers))
            pbytes, n_tensors = top.param_bytes, top.n_tensors
            if not pbytes:  # no shapes on the update ops: every parameter with a gradient
                pbytes, n_tensors = params.get(rank0, (0, 0))
            n_optimizers = max(s.n_optimizers for s in mine)
            # At most two ops per parameter (plain SGD: one add_ each): the loop already
            # streams every byte once, as a fused kernel would; only launches can go, and
            # on CPU torch's fused SGD measured slower than this loop (benchmarks/advice.py):
            # never advised there (the launch cost read from a CPU run moves with the load,
            # so it decided by load whether audio_conv1d's 16 add_ went on to be priced).
            cpu = not table.device
            if n_tensors and n_ops <= 2 * n_tensors and (
                    cpu or (n_ops - 1) * overhead < MIN_SAVING_S):
                continue
            # the loop's page faults belong to this class only when no other optimizer stepped
            faults = loop_faults(ctx) if cpu and len(by_class) == 1 else None
            sqrt_s = loop_sqrt_excess(ctx, table, rows) if cpu and not n_foreach else 0.0
            # the unprofiled update's time: this run's pace (one class's calls only)
            unprofiled = (unprofiled_update_s(ctx, rows[0][0])
                          if cpu and len(by_class) == 1 and not n_foreach else None)
            loops.append(LoopMeasure(cls, rows, now, n_ops, pbytes, n_tensors, n_optimizers,
                                     n_foreach > 0, cpu, ceiling, faults, sqrt_s, unprofiled,
                                     bandwidth, bw_source, overhead))
        return loops

    @staticmethod
    def _per_step(rows: list[tuple], times: list[float],
                  updated: dict[tuple[int, int], tuple[int, int]]) -> list[StepUpdate]:
        """The spans of one class summed per (rank, step): each span's time, ops, and the
        parameters its own update ops touch (``_updated_params``)."""
        out: dict[tuple[int, int], StepUpdate] = {}
        for t, r in zip(times, rows):
            s = out.setdefault((r[0], r[1]), StepUpdate(r[0], r[1]))
            nbytes, n = updated.get((r[0], r[2]), (0, 0))
            s.seconds += t
            s.n_ops += r[6]
            s.param_bytes += nbytes
            s.n_tensors += n
            s.n_optimizers += 1
        return list(out.values())

    @staticmethod
    def _updated_params(ctx: Context, spans: list[tuple]) -> dict[tuple[int, int], tuple[int, int]]:
        """Bytes and number of the parameters each loop span updates, read from its own ops.

        The loop runs the same ops once per parameter (Adam: ``lerp_``, ``mul_``,
        ``addcmul_``, ``sqrt``, ``div``, ``addcdiv_``; plain SGD: ``add_``), each with a
        tensor of the parameter's shape first; the op name called the fewest times (on
        tensors, not the 0-dim step counters) is called once per parameter. Not the
        ``AccumulateGrad`` shapes: a GAN's generator backward runs through the
        discriminator, whose parameters get a gradient twice a step but only one of the two
        optimizers updates them."""
        ids = [(r[0], r[2]) for r in spans if not r[7] and not r[8]]
        if not ids:
            return {}
        rows = ctx.run.sql("""
            SELECT c.rank, c.parent_id, c.name, c.input_shapes, c.dtypes FROM ops c
            WHERE c.cat = 'cpu_op' AND c.phase NOT IN ('forward', 'backward')
              AND (c.rank, c.parent_id) IN (SELECT * FROM (VALUES """
            + ", ".join(f"({r}, {i})" for r, i in ids) + "))")
        per_name: dict[tuple[int, int], dict[str, list[int]]] = defaultdict(
            lambda: defaultdict(list))
        for rank, parent, name, shapes, dtypes in rows:
            io = op_io(shapes, dtypes)
            if io is None or not io.inputs or not io.inputs[0][0]:
                continue  # no shapes recorded, or a 0-dim tensor (Adam's step counter)
            shape, size = io.inputs[0]
            per_name[(rank, parent)][name].append(math.prod(shape) * size)
        out = {}
        for key, names in per_name.items():
            sizes = min(names.values(), key=lambda v: (len(v), -sum(v)))
            out[key] = (sum(sizes), len(sizes))
        return out

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
                 overhead: float, n_tensors: int = 0, cpu: bool = False,
                 n_optimizers: int = 1, lightning: bool = False,
                 ceiling: float | None = None, faults: float | None = None,
                 sqrt_s: float = 0.0, unprofiled: float | None = None, *,
                 words: StepWords) -> Finding | None:
        factor = FUSED_BYTES_PER_PARAM_BYTE.get(cls)
        first = rows[0]
        evidence = (Evidence(text=(f"{first[3]}: {n_ops:.0f} ops, {now * 1e3:.3f} ms "
                                   f"{words.per_step}"),
                             rank=first[0], step=first[1], start_ns=first[5],
                             end_ns=first[5] + first[4], op_ids=(first[2],), value=now),)
        impl = "foreach" if foreach else "per-parameter loop"
        if factor is not None and pbytes:
            # calls, not optimizers: a WGAN's critic steps its one Adam 5 times an iteration
            # ("6 Adam optimizers" for its 2 was wrong); the spans do not name the instance
            several = (f" ({n_optimizers} {cls}.step calls {words.each_step}: several "
                       "optimizers, e.g. a GAN's generator and discriminator, or one that "
                       "steps more than once, e.g. a WGAN's critic; their updates are summed, "
                       "and the fix fuses all of them)" if n_optimizers > 1 else "")
            head = (f"{cls}.step runs the {impl} implementation: {n_ops:.0f} ops taking "
                    f"{now * 1e3:.3f} ms {words.per_step} at full speed (the profiler's cost "
                    f"per recorded op taken out){several}.")
            unknown = None
            priced_loop = False
            price = None
            if not cpu:
                predicted = factor * pbytes / bandwidth + overhead
                saving = now - predicted
                body = (f" The fused kernel reads and writes {factor} bytes per parameter byte "
                        f"({pbytes / 2**20:.2f} MiB of parameters with gradients): "
                        f"{factor * pbytes / 2**20:.1f} MiB at {bandwidth / 1e9:.1f} GB/s "
                        f"({bw_source}) = {predicted * 1e3:.3f} ms.")
            else:
                price = price_cpu_update(
                    cls, n_ops, pbytes, n_tensors, n_optimizers, faults=faults, sqrt_s=sqrt_s,
                    unprofiled=unprofiled,
                    recorded=ceiling if ceiling is not None else now,
                    foreach=foreach, lightning=lightning, words=words)
                predicted, saving, body = price.fused_s, price.saving_s, price.text
                priced_loop, unknown = price.priced_loop, price.unknown
            if cpu and cls not in CPU_CALIBRATED:
                # found whatever the saving, unranked: capped by the loop's recorded extent,
                # the difference of two uncalibrated prices sits near the cut and the extent
                # moves with the load (recsys_embeddingbag's Adagrad: 0.03 ms here, over
                # 0.05 ms under a heavier load; the corpus found it in some runs only)
                saving = max(0.0, saving)
            elif saving < MIN_SAVING_S:
                return None
            return Finding(
                analyzer=self.name, kind="fusion.optimizer", key=cls,
                title=f"Use {cls}(..., fused=True): one pass over the parameters",
                saving_s=saving, confidence="medium", explanation=head + body,
                evidence=evidence,
                fix=f"optimizer = torch.optim.{cls}(model.parameters(), ..., fused=True)",
                apply={"DS_OPTIMIZER_FUSED": "1"},
                verify="dsprof verify RUN ID   (reruns the script with DS_OPTIMIZER_FUSED=1)",
                data={"optimizer": cls, "implementation": impl, "ops_per_step": n_ops,
                      "param_bytes": pbytes, "param_tensors": n_tensors,
                      **({"optimizers": n_optimizers} if n_optimizers > 1 else {}),
                      "predicted_fused_s": predicted,
                      **({"loop_cpu_s": loop_cpu_s(n_ops, pbytes)} if cpu else {}),
                      **({"loop_page_faults": faults} if cpu and faults and faults >= 1
                         else {}),
                      **({"loop_sqrt_excess_s": sqrt_s} if cpu and sqrt_s else {}),
                      # what the price took of it (at most what unprofiled step() left)
                      **({"loop_sqrt_priced_s": price.sqrt_s}
                         if price is not None and price.sqrt_s < sqrt_s else {}),
                      **({"pace": price.pace, "unprofiled_update_s": unprofiled}
                         if price is not None and price.pace is not None else {}),
                      # both sides priced at calibrated thread-CPU costs unless the loop's
                      # recorded extent (op time) capped the loop
                      **({SAVING_CLOCK: THREAD_CPU} if cpu and priced_loop else {}),
                      **({"impact_unknown": unknown} if unknown else {})})
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
            explanation=(f"{cls}.step runs {n_ops:.0f} ops {words.per_step}, one set per "
                         f"parameter; foreach batches them, removing about "
                         f"{overhead * 1e6:.1f} us of dispatch per op (the arithmetic stays)."
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
