"""Batch size: the largest batch that fits the memory, with and without checkpointing, and the
samples per second it would give.

Example:
    batch 32 peaks at 210 MiB of a 512 MiB budget: 41 MiB fixed, 5.3 MiB per sample; batch 88
    fits (peak 506 MiB predicted), 1,210 -> 1,460 samples/s.

Pattern:
    Training memory is a part fixed per step (parameters, gradients, optimizer state) plus a
    part that grows in proportion to the batch (activations, inputs, temporaries, logits).
    The profiled batch size B0 is the DataLoader's (``steps.batch_size``: the leading dimension
    of the batches it returned).

Algorithm:
    At every point t of the peak step's timeline (``memory_series``), live bytes at batch B are
    F(t) + B/B0 x V(t); the largest B with max_t of that under the budget is
    floor(min_t B0 x (budget - F(t)) / V(t)). The budget is ``--memory-budget``, else the GPU's
    memory less 8 % (:func:`~dsprof.metrics.memory.model.memory_budget`). With checkpointing,
    V(t) loses what the plan frees at t; of the checkpointing front, the plan giving the most
    samples/s at its own largest batch is advised. Time: the forward, backward and DataLoader
    wait of the profiled step grow with the batch, the rest (optimizer, Python between steps)
    does not; that split of the mean step time gives step(B) = fixed + B/B0 x scaled, plus
    B/B0 x the recompute time with checkpointing, and samples/s = B / step(B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsprof.analyzers.checkpointing import checkpoint_plan, module_patterns
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.memory.model import (
    Budget,
    PeakTimeline,
    memory_budget,
    peak_timeline,
    unprofiled_ratio,
)
from dsprof.module_paths import join_knob_paths
from dsprof.units import fmt_bytes

MIN_GAIN = 0.05  # a batch change that moves samples/s by less than this is not advised


@dataclass(frozen=True)
class BatchPrediction:
    """Args:
        batch: the advised batch size.
        peak: predicted peak bytes at that batch.
        step_s: predicted seconds per step.
        samples_s: predicted samples per second.
        modules: the modules checkpointed (empty: none).
        limit: (fixed, batch-proportional) bytes at B0 of the point of the step that limits
            the batch.
    """

    batch: int
    peak: int
    step_s: float
    samples_s: float
    modules: tuple[str, ...] = ()
    limit: tuple[int, int] = (0, 0)


def largest_batch(fixed: np.ndarray, scaled: np.ndarray, batch0: int,
                  budget: int) -> tuple[int, int]:
    """The largest batch whose peak stays within ``budget`` (0 when even the fixed part does
    not fit), and the timeline point that limits it."""
    if int(fixed.max()) >= budget:
        return 0, int(np.argmax(fixed))
    grows = np.flatnonzero(scaled > 0)
    if not len(grows):
        return 1 << 20, int(np.argmax(fixed))
    limit = (budget - fixed[grows]) / scaled[grows] * batch0
    k = int(np.argmin(limit))
    return max(0, math.floor(float(limit[k]) + 1e-9)), int(grows[k])


def peak_at(fixed: np.ndarray, scaled: np.ndarray, batch0: int, batch: int) -> int:
    return int((fixed + scaled * (batch / batch0)).max())


def batch_of(ctx: Context, timeline: PeakTimeline) -> int | None:
    """The batch size of the peak step, else the most common one, else the DataLoader's."""
    rows = ctx.run.sql("SELECT batch_size FROM steps WHERE rank = ? AND step = ? "
                       "AND batch_size > 0", [timeline.rank, timeline.step])
    if not rows:
        rows = ctx.run.sql("SELECT mode(batch_size) FROM steps WHERE batch_size > 0")
    if (not rows or rows[0][0] is None) and ctx.run.has("dataloaders"):
        rows = ctx.run.sql("SELECT max(batch_size) FROM dataloaders")
    return int(rows[0][0]) if rows and rows[0][0] else None


def time_split(ctx: Context, timeline: PeakTimeline) -> tuple[float, float]:
    """(fixed, scaled) seconds of the mean step: the profiled step's forward, backward and
    DataLoader wait, as a share of it, grow with the batch."""
    step_s = ctx.step_s or 0.0
    rows = ctx.run.sql(
        "SELECT (SELECT dur_ns FROM steps WHERE rank = ? AND step = ?), "
        "(SELECT coalesce(data_wait_ns, 0) FROM steps WHERE rank = ? AND step = ?), "
        "(SELECT coalesce(sum(dur_ns), 0) FROM ops WHERE rank = ? AND step = ? "
        " AND parent_id IS NULL AND phase IN ('forward', 'backward'))",
        [timeline.rank, timeline.step] * 3)
    dur, wait, compute = rows[0]
    if not dur or not step_s:
        return step_s, 0.0
    share = min(1.0, (float(wait or 0) + float(compute or 0)) / float(dur))
    return step_s * (1 - share), step_s * share


class BatchSize(Analyzer):
    name = "batch_size"
    # memory_series is checked in skip_reason, whose reason fits the device and the source
    requires = ("steps",)

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.meta.get("source") == "import" and ctx.on_gpu:
            return self._gpu_trace_gaps(ctx)
        if not ctx.nonempty("memory_series"):
            if ctx.meta.get("source") == "import":
                return ("the trace has no memory events (record it with profile_memory=True) "
                        "and no batch size (a trace does not record it)")
            return "needs the memory_series table (the memory collector recorded no window)"
        if memory_budget(ctx.meta) is None:
            if ctx.on_gpu:
                return ("no memory budget to fill: the run recorded no GPU memory capacity; "
                        "give --memory-budget BYTES")
            return ("no memory budget to fill: on a CPU run give --memory-budget BYTES "
                    "(the GPU's own memory is used on a GPU)")
        if not ctx.run.sql("SELECT count(batch_size) FROM steps")[0][0]:
            return ("no batch size: the steps took no batch from a DataLoader (the batch "
                    "dimension is the leading dimension of the DataLoader's batches)")
        return None

    @staticmethod
    def _gpu_trace_gaps(ctx: Context) -> str | None:
        """What an imported GPU trace lacks for a batch prediction, or None when nothing."""
        needs = []
        if not ctx.nonempty("memory_series"):
            needs.append("memory events (profile_memory=True)")
        elif not ctx.run.sql("SELECT count(reserved) FROM memory WHERE device <> 'cpu'")[0][0]:
            needs.append("allocator totals in its memory events (this trace's format records "
                         "block sizes only, so memory allocated before it is not counted)")
        budget = memory_budget(ctx.meta)
        if budget is None:
            needs.append("the GPU's memory capacity (the trace has no deviceProperties "
                         "with totalGlobalMem)")
        if not ctx.run.sql("SELECT count(batch_size) FROM steps")[0][0]:
            needs.append("the batch size (a trace does not record it; dsprof run reads it "
                         "from the DataLoader)")
        if not needs:
            return None
        room = f" {fmt_bytes(budget.bytes)} ({budget.source})" if budget else ""
        return (f"on a GPU trace, the largest batch that fits{room} needs "
                + "; ".join(needs) + ": profile the script with dsprof run on the GPU")

    def run(self, ctx: Context) -> list[Finding]:
        timeline = peak_timeline(ctx.run)
        if timeline is None:
            return []
        batch0 = batch_of(ctx, timeline)
        budget = memory_budget(ctx.meta, timeline.rank)
        if not batch0 or budget is None:
            return []
        fixed_s, scaled_s = time_split(ctx, timeline)
        now = BatchPrediction(batch0, timeline.peak, fixed_s + scaled_s,
                              batch0 / (fixed_s + scaled_s) if fixed_s + scaled_s else 0.0)
        plain = self._plain(timeline, batch0, budget, fixed_s, scaled_s)
        out = []
        if plain is not None and plain.batch != batch0:
            out.append(self._finding(ctx, timeline, budget, now, plain, scaled_s))
        ckpt = self._checkpointed(ctx, timeline, batch0, budget, fixed_s, scaled_s)
        # Checkpointing to fit a larger batch is advised only when it pays in samples/s.
        if ckpt is not None and ckpt.batch > (plain.batch if plain else 0) and \
                ckpt.samples_s >= (1 + MIN_GAIN) * max(now.samples_s,
                                                       plain.samples_s if plain else 0.0):
            out.append(self._finding(ctx, timeline, budget, now, ckpt, scaled_s))
        return out

    @staticmethod
    def _plain(t: PeakTimeline, batch0: int, budget: Budget, fixed_s: float,
               scaled_s: float) -> BatchPrediction | None:
        batch, at = largest_batch(t.fixed, t.scaled, batch0, budget.bytes)
        if batch < 1:
            return None
        step = fixed_s + scaled_s * batch / batch0
        return BatchPrediction(batch, peak_at(t.fixed, t.scaled, batch0, batch), step,
                               batch / step if step else 0.0, limit=(int(t.fixed[at]),
                                                                     int(t.scaled[at])))

    @staticmethod
    def _checkpointed(ctx: Context, t: PeakTimeline, batch0: int, budget: Budget,
                      fixed_s: float, scaled_s: float) -> BatchPrediction | None:
        plan = checkpoint_plan(ctx)
        if plan is None:
            return None
        best = None
        for point in plan.front[1:]:
            scaled = t.scaled - plan.timeline.reduction(plan.members(point))
            batch, at = largest_batch(t.fixed, scaled, batch0, budget.bytes)
            if batch < 1:
                continue
            step = fixed_s + (scaled_s + point.cost_s) * batch / batch0
            pred = BatchPrediction(batch, peak_at(t.fixed, scaled, batch0, batch), step,
                                   batch / step, point.modules,
                                   (int(t.fixed[at]), int(scaled[at])))
            if best is None or pred.samples_s > best.samples_s:
                best = pred
        return best

    def _finding(self, ctx: Context, t: PeakTimeline, budget: Budget, now: BatchPrediction,
                 new: BatchPrediction, scaled_s: float) -> Finding:
        gain = new.samples_s / now.samples_s - 1 if now.samples_s else 0.0
        verb = "Raise" if new.batch > now.batch else "Lower"
        apply = {"DS_BATCH_SIZE": str(new.batch)} if ctx.nonempty("dataloaders") else {}
        suffix = ""
        if new.modules:
            names = [n for (n,) in ctx.run.sql("SELECT DISTINCT name FROM modules")]
            patterns = module_patterns(new.modules, names)
            apply = {**apply, "DS_GRADIENT_CHECKPOINTING": join_knob_paths(patterns)}
            suffix = f" with {', '.join(patterns[:2])}{' ...' if len(patterns) > 2 else ''} " \
                     "checkpointed"
        fixed_b, scaled_b = new.limit
        per_sample = scaled_b / now.batch
        # Processing the same samples at the new rate: the time saved per current step.
        saving_s = max(0.0, now.step_s * (1 - now.samples_s / new.samples_s)) \
            if new.samples_s else 0.0
        over = t.peak > budget.bytes
        ratio = unprofiled_ratio(ctx.run, t.rank, t.step)
        trains = _trains(ctx)
        fixed_what = ("parameters, gradients, optimizer state" if trains
                      else "parameters and buffers")
        return Finding(
            analyzer=self.name,
            kind="batch.checkpointed" if new.modules else "batch.size",
            key="batch",
            title=(f"{verb} the batch size from {now.batch} to {new.batch}{suffix}: peak "
                   f"{fmt_bytes(new.peak)} of {fmt_bytes(budget.bytes)}, "
                   f"{now.samples_s:,.0f} -> {new.samples_s:,.0f} samples/s ({gain:+.0%})"),
            saving_s=saving_s if gain >= MIN_GAIN else 0.0,
            saving_bytes=max(0, t.peak - new.peak) if over else 0,
            confidence="medium" if ctx.meta.get("source") == "run" else "low",
            explanation=(
                f"At batch {now.batch} the peak is {fmt_bytes(t.peak)}. Where the step is "
                f"tightest{' with the plan' if new.modules else ''}, "
                f"{fmt_bytes(fixed_b)} is fixed ({fixed_what}) and "
                f"{fmt_bytes(per_sample)} grows per sample. The budget is {fmt_bytes(budget.bytes)} "
                f"({budget.source}); batch {new.batch} is the largest under it over the whole "
                f"step (peak {fmt_bytes(new.peak)} predicted). Of the {now.step_s * 1e3:.1f} ms "
                f"step, {scaled_s * 1e3:.1f} ms ({'forward, backward' if trains else 'forward'}"
                f", data wait) grow with the "
                f"batch and {(now.step_s - scaled_s) * 1e3:.1f} ms do not"
                + (", and the recompute adds one forward of the checkpointed modules"
                   if new.modules else "")
                + f": {new.step_s * 1e3:.1f} ms {ctx.words.a_step} at batch {new.batch}."),
            evidence=(Evidence(f"peak at batch {now.batch}: {fmt_bytes(t.peak)}", rank=t.rank,
                               step=t.step, value=float(t.peak)),
                      Evidence(f"profiled step times scaled by {ratio:.2f} to the plain run",
                               value=ratio)),
            fix=(f"DataLoader(..., batch_size={new.batch})" +
                 ("  # and scale the learning rate with it (linear or sqrt rule)" if verb ==
                  "Raise" and trains else "")),
            apply=apply,
            verify=(f"dsprof tune batch-size --baseline {{run}} "
                    f"{ctx.target_command or 'SCRIPT ARGS'}"),
            data={"batch": now.batch, "advised": new.batch, "budget": budget.bytes,
                  "peak": t.peak, "predicted_peak": new.peak, "samples_s": now.samples_s,
                  "predicted_samples_s": new.samples_s, "predicted_step_s": new.step_s,
                  "fixed_bytes": fixed_b, "bytes_per_sample": per_sample,
                  "checkpointed": list(new.modules)},
        )


def _trains(ctx: Context) -> bool:
    """Whether the run trains: backward or optimizer ops in its trace, else (no ops table)
    steps that were not an inference run's forwards. An inference run has no gradients,
    optimizer state or learning rate to speak of."""
    if ctx.nonempty("ops"):
        return bool(ctx.run.sql("SELECT count(*) FROM ops WHERE phase IN ('backward', "
                                "'optimizer')")[0][0])
    return ctx.meta.get("steps_source") != "forward"
