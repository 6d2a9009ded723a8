"""Activation checkpointing: which modules to wrap, the peak it leaves, the time it costs.

Example:
    TransformerLM.blocks.* save 2.5 MiB each for backward; checkpointing both takes the peak
    from 24.0 MiB to 19.4 MiB for one more forward of each block (+41 ms a step).

Pattern:
    A module's forward saves tensors for its backward (``modules.activation_bytes``: what it
    created and saved, not its inputs, which checkpoint keeps). Wrapped in
    ``torch.utils.checkpoint.checkpoint``, it keeps only its inputs, and recomputes its forward
    just before its backward.

Algorithm:
    The peak step's live bytes over time (``memory_series``) and each module's window, from
    the end of its forward to the start of its backward (``ops``), give the peak with any set
    of modules checkpointed: their saved bytes are gone inside their windows
    (:mod:`dsprof.metrics.memory.model`). A tree DP over the module hierarchy
    (:mod:`dsprof.metrics.memory.checkpoint_plan`; never a block and its child) proposes the sets on
    the Pareto front of freed bytes against recompute time; the timeline prices them. The
    advised plan is the cheapest one under the memory budget when the peak is over it; with the
    peak near the budget (at least ``PRESSURE`` of it, the TensorBoard plugin's 90 % of device
    memory) the knee of the front: the plan with the largest share of peak saved less share of
    step time added, when it saves at least ``MIN_SHARE`` of the peak.

Preconditions:
    Trading time for memory is advice only when memory binds. Without pressure (no
    ``--memory-budget`` on a CPU run, or a peak well under the budget) nothing is advised: an
    ``info`` finding (no saving, no knob) states the headroom and names the lowest-peak plan.
    Checkpointing to fit a larger batch that pays is the batch-size analyzer's
    ``batch.checkpointed``. A script that checkpoints already (module spans re-run in
    backward: transformers' ``gradient_checkpointing=True``) is skipped with that reason, the
    regions named: a GPT-2 Trainer with checkpointing on got no word either way. The whole front goes in ``data.front`` for the dashboard.
"""

from __future__ import annotations

import re

from dsprof.analyzers.frameworks import framework_fix
from dsprof.analyzers.registry import Analyzer, Context, shell_word
from dsprof.findings import Evidence, Finding
from dsprof.metrics.memory.checkpoint_plan import Candidate, PlanPoint, cheapest_under, pareto_front
from dsprof.metrics.memory.model import (
    CheckpointTimeline,
    memory_budget,
    module_windows,
    peak_timeline,
    unprofiled_ratio,
)
from dsprof.module_paths import join_knob_paths
from dsprof.render.safe_text import one_line
from dsprof.units import fmt_bytes

MIN_SHARE = 0.10  # a plan saving less of the peak than this is not worth a finding
PRESSURE = 0.90  # a peak at this share of the budget binds (tb_plugin: 90 % of device memory)


class CheckpointPlan:
    """The front and the advised plan for a run, shared with the batch-size analyzer."""

    def __init__(self, timeline: CheckpointTimeline, front: list[PlanPoint],
                 advised: PlanPoint | None, target: int | None, time_ratio: float):
        self.timeline, self.front, self.advised, self.target = timeline, front, advised, target
        self.time_ratio = time_ratio
        """Unprofiled over profiled step time: scales the profiled forward times."""

    def members(self, point: PlanPoint) -> list[int]:
        index = {w.name: i for i, w in enumerate(self.timeline.windows)}
        return [index[n] for n in point.modules]


def checkpoint_plan(ctx: Context) -> CheckpointPlan | None:
    """Solve the run's checkpointing front (None without memory and module tables)."""
    timeline = peak_timeline(ctx.run)
    if timeline is None:
        return None
    windows = module_windows(ctx.run, timeline.rank, timeline.step)
    if not windows:
        return None
    model = CheckpointTimeline(timeline, windows)
    # Forward times come from a profiled step; scale them to the run without the profiler.
    ratio = unprofiled_ratio(ctx.run, timeline.rank, timeline.step)
    cands = [Candidate(w.name, w.freed, w.cost_s * ratio) for w in windows]
    front = pareto_front(cands, timeline.peak, evaluate=model.peaks)
    budget = memory_budget(ctx.meta, timeline.rank)
    step_s = ctx.step_s or 0.0
    if budget is not None and timeline.peak > budget.bytes:
        return CheckpointPlan(model, front, cheapest_under(front, budget.bytes), budget.bytes,
                              ratio)
    if budget is None or timeline.peak < PRESSURE * budget.bytes:
        return CheckpointPlan(model, front, None, None, ratio)  # no pressure: no advice
    best, best_score = None, 0.0
    for p in front[1:]:
        saved = (timeline.peak - p.peak) / timeline.peak
        score = saved - (p.cost_s / step_s if step_s else 0.0)
        if saved >= MIN_SHARE and score > best_score:
            best, best_score = p, score
    return CheckpointPlan(model, front, best, None, ratio)


def _headroom(ctx: Context, peak: int) -> str:
    """Why memory does not bind, with the headroom when a budget says how much there is."""
    budget = memory_budget(ctx.meta)
    if budget is None:
        return ("no memory pressure (a CPU run with no --memory-budget: give one to plan "
                "for a limit)")
    used = peak / budget.bytes
    if used >= PRESSURE:
        return (f"the peak is {used:.0%} of the budget, but no plan saves {MIN_SHARE:.0%} of it "
                "for less than its share of step time")
    grow = f"; activations could grow about {1 / used:.0f}x" if used < 0.5 else ""
    return (f"no memory pressure: the peak uses {used:.1%} of {fmt_bytes(budget.bytes)} "
            f"({budget.source}){grow}")


def module_patterns(chosen: tuple[str, ...], all_names: list[str]) -> list[str]:
    """Module paths for ``DS_GRADIENT_CHECKPOINTING``, with ``parent.*`` for a container whose
    numbered children are all chosen (``TransformerLM.blocks.*``)."""
    chosen_set = set(chosen)
    out: list[str] = []
    done: set[str] = set()
    for name in chosen:
        parent, _, last = name.rpartition(".")
        if parent and last.isdigit():
            siblings = {n for n in all_names
                        if re.fullmatch(re.escape(parent) + r"\.\d+", n)}
            if siblings <= chosen_set:
                if parent not in done:
                    done.add(parent)
                    out.append(f"{parent}.*")
                continue
        out.append(name)
    return out


def checkpointed_regions(ctx: Context) -> list[str]:
    """The modules whose forward the script checkpoints, read from the module spans that ran
    again in backward (``use_reentrant=False``, or the reentrant ``CheckpointFunction``'s
    re-run): the parents of the outermost ones, numbered children as ``parent.*``."""
    names = {str(n) for (n,) in ctx.run.sql("""
        SELECT DISTINCT name FROM ops WHERE phase = 'backward' AND cat = 'module'""")}
    outer = {n for n in names if not any(n.startswith(m + ".") for m in names)}
    # a block that transformers checkpoints re-runs its children's spans, not its own (a
    # GPT-2 block's ln_1, attn, ln_2, mlp): siblings re-run together name their parent
    by_parent: dict[str, list[str]] = {}
    for n in outer:
        by_parent.setdefault(n.rpartition(".")[0], []).append(n)
    regions = {p if p and len(kids) > 1 else k for p, kids in by_parent.items() for k in kids}
    return sorted({re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in regions})


class Checkpointing(Analyzer):
    name = "checkpointing"
    requires = ("modules", "memory_series", "ops")

    def skip_reason(self, ctx: Context) -> str | None:
        rows = ctx.run.sql("SELECT count(*) FROM modules WHERE activation_bytes > 0")
        if not rows[0][0]:
            return "no module saved tensors for backward in the profiled steps (no training?)"
        regions = checkpointed_regions(ctx)
        if regions:
            # the script checkpoints already (transformers' gradient_checkpointing=True):
            # what its blocks keep is their inputs, and a plan for the rest would stack a
            # second recompute on the first (a GPT-2 Trainer run got no word either way)
            return ("activation checkpointing is on: the forwards of "
                    f"{', '.join(regions[:3])}{' ...' if len(regions) > 3 else ''} re-run in "
                    "backward, so they keep only their inputs for it; no further "
                    "checkpointing is advised")
        return None

    def run(self, ctx: Context) -> list[Finding]:
        self.no_finding_reason = None
        plan = checkpoint_plan(ctx)
        if plan is None or len(plan.front) < 2:
            self.no_finding_reason = _every_module_repeats(ctx)
            return []
        # Not advised (no budget pressure, and it costs more time than it saves memory): an
        # info finding with the lowest-peak plan, so the front still reaches the dashboard.
        advised = plan.advised is not None
        p, t = plan.advised or plan.front[-1], plan.timeline.timeline
        if not advised and t.peak - p.peak < MIN_SHARE * t.peak:
            # a what-if that moves the peak by next to nothing is no information (Pyro's
            # AutoNormal: 149.07 KiB -> 149.02 KiB, 52 B of activations, +17 % a step)
            self.no_finding_reason = (
                f"checkpointing would lower the peak ({fmt_bytes(t.peak)}) by "
                f"{fmt_bytes(t.peak - p.peak)} at most, under the {MIN_SHARE:.0%} a plan "
                "is worth")
            return []
        names = [n for (n,) in ctx.run.sql("SELECT DISTINCT name FROM modules ORDER BY name")]
        patterns = module_patterns(p.modules, names)
        roots = sorted({w.name.split(".", 1)[0] for w in plan.timeline.windows})
        step_s = ctx.step_s or 0.0
        cost = (f"+{p.cost_s * 1e3:.1f} ms {ctx.words.a_step}" +
                (f" ({p.cost_s / step_s:.0%})" if step_s else ""))
        why = (f"over the budget of {fmt_bytes(plan.target)}" if plan.target is not None
               else "the best memory saved per time added on the front" if advised
               else f"the lowest peak on the front; not advised: {_headroom(ctx, t.peak)}")
        by_name = {w.name: w for w in plan.timeline.windows}
        evidence = tuple(
            Evidence(f"{n}: {fmt_bytes(by_name[n].freed)} saved for backward, forward "
                     f"{by_name[n].cost_s * plan.time_ratio * 1e3:.1f} ms", module=n,
                     rank=t.rank, step=t.step,
                     value=float(by_name[n].freed))
            for n in sorted(p.modules, key=lambda n: -by_name[n].freed)[:12])
        target_cmd = ctx.target_command or "SCRIPT ARGS"
        env = join_knob_paths(patterns)
        return [Finding(
            analyzer=self.name, kind="memory.checkpointing", key=",".join(roots),
            title=(f"{'Checkpoint' if advised else 'Checkpointing'} "
                   f"{', '.join(patterns[:3])}{' ...' if len(patterns) > 3 else ''}"
                   f"{':' if advised else ' would take the'}"
                   f" peak {fmt_bytes(t.peak)} -> {fmt_bytes(p.peak)}, {cost}"
                   f"{'' if advised else ' (not advised)'}"),
            saving_bytes=t.peak - p.peak if advised else 0, confidence="medium",
            explanation=(
                f"The peak ({fmt_bytes(t.peak)}, step {t.step}, rank {t.rank}) holds "
                f"{fmt_bytes(t.parts.get('activation', 0))} of activations. Checkpointing "
                f"{len(p.modules)} module(s) drops {fmt_bytes(p.freed)} they save for backward "
                f"until each one's backward recomputes it (at most "
                f"{fmt_bytes(p.recompute_peak)} back at once): predicted peak "
                f"{fmt_bytes(p.peak)}, for one more forward of each, {cost}. Chosen as {why}; "
                f"the front has {len(plan.front)} plans (data.front)."),
            evidence=evidence,
            fix=(framework_fix(ctx, "checkpointing") +
                 "from torch.utils.checkpoint import checkpoint\n"
                 "# in the parent's forward, instead of y = module(x):\n"
                 "y = checkpoint(module, x, use_reentrant=False)\n"
                 f"# modules: {one_line(', '.join(patterns))}\n"
                 "# or, without editing the model's code:\n"
                 "from dsprof.apply.checkpointing import checkpoint_modules\n"
                 f"checkpoint_modules(model, {patterns!r})"),
            apply={"DS_GRADIENT_CHECKPOINTING": env} if advised else {},
            verify=f"dsprof run --apply {{id}} --baseline {{run}} {target_cmd}" if advised
            else f"DS_GRADIENT_CHECKPOINTING={shell_word(env)} dsprof run {target_cmd}",
            data={"peak": t.peak, "target": plan.target, "step_s": step_s,
                  "front": [{"peak": q.peak, "cost_s": round(q.cost_s, 9), "freed": q.freed,
                             "modules": list(q.modules)} for q in plan.front],
                  "advised": {"peak": p.peak, "cost_s": p.cost_s, "modules": list(p.modules),
                              "patterns": patterns}},
        )]


def _every_module_repeats(ctx: Context) -> str | None:
    """Why no plan where every module with parameters ran several times a step (gradient
    accumulation's micro-batches): the plan follows one forward and one backward of a module
    a step (``metrics/memory/model.module_windows``), and said nothing at all of a diffusers
    UNet under accelerate's 4 micro-batches a step at 92 % of its memory budget."""
    if not ctx.nonempty("modules"):
        return None
    (low, high), = ctx.run.sql("SELECT min(calls), max(calls) FROM modules WHERE params > 0")
    if not low or low < 2:
        return None
    calls = f"{low}" if low == high else f"{low}-{high}"
    return (f"every module with parameters ran {calls} times a step (gradient accumulation's "
            "micro-batches, or a model called several times): the checkpointing plan follows "
            "one forward and one backward of a module a step, so none is made; each "
            "micro-batch's activations are freed by its own backward, so the peak is one "
            "micro-batch's")

