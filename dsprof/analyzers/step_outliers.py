"""Steps much slower than the others, and what differed in them.

A step is an outlier when it is slower than median + 3 robust standard deviations (1.4826 x
MAD) and at least 20 % above the median (the rule ``dsprof summary`` uses), over the steady
steps only (``metrics.noise``): steps dsprof disturbed (setup, first calls, profiler windows
and warm-up, the step that writes a window's trace, every step of a DEBUG or anomaly-check run)
are never evidence, and neither is a step in which torch.compile compiled (compile time,
reported as such). At least 5 steady steps are needed.

What differed, per outlier, from the columns every step has: time waiting for data
(``data_wait_ns``), time the stepping thread was off the CPU (``dur_ns - cpu_ns``: I/O,
syncs, other processes), and, when the outlier and a normal step were both profiled, the ops
whose self time grew most, and the time Python's garbage collector ran (``gc_ns``). Outliers that recur at a fixed interval (every N steps) are named as
periodic work (evaluation, checkpoint saving, logging).

Eight verdicts, and only the last one is a saving:

- ``steps.warmup``: the outliers are the first k steady steps and the run settles after them
  (at least ``MIN_STEPS`` normal steps follow): one-time work (lazy initialisation, the
  allocator's and caches' warm-up, autotuning) that a longer run amortizes. No saving. When
  other outliers follow, the warm-up is set aside instead (``step_warmup.py``).
- ``steps.noise``: most outliers were slow because the process was off the CPU (wall time
  minus the stepping thread's CPU time grew), on a CPU run with no data wait to explain it:
  other processes or I/O on this machine, not the program. No saving.
- ``steps.gc``: every outlier spent at least half its excess in Python's cyclic garbage
  collector (``steps.gc_ns``): the runtime's work, named with the generation, no saving.
- ``steps.periodic``: the outliers recur every N steps: work the script asks for (evaluation,
  checkpoint saving, logging), named with the source lines that ran only in those steps when
  dsprof saw them (host syncs). Its cost is stated; it is not a saving, since the script wants
  that work done. It wins over ``steps.noise`` when those steps did more work (the thread's
  CPU time or their ops grew, or they ran a line no other step ran): under load a step that
  computes more also waits longer for a core (:func:`step_period.periodic_work`). Slow steps that saved
  a checkpoint (``torch.save``, recorded in every step) at the saves' own stride are periodic
  and name the save, even when too few are steady for a stride of outliers
  (:mod:`dsprof.analyzers.step_saves`).
- ``steps.more_input``: the steps are an inference run's forwards (``steps.source`` =
  ``forward``: one call of the model each) and most outliers did more work: a call on more
  input (a ``generate()`` call's prefill, which takes the whole prompt at once; a longer
  sequence; a larger batch). What the script asked the model to compute, not a saving. Before
  ``steps.periodic``: a loop of ``generate()`` calls has its prefill every N steps, and that is
  no evaluation or checkpoint to do less often.
- ``steps.extra_work``: no stride, but the outliers ran source lines that no normal step ran
  (host syncs: an evaluation's ``.item()``, a checkpoint's ``torch.save``): an evaluation that
  lands once in the counted steps is the script's work too. Stated with those lines, no
  saving. Before ``steps.noise``, for the same reason as ``steps.periodic``.
- ``steps.more_iterations``: a line the normal steps run ran 1.5x as often or more (host
  syncs): the script's loop ran longer (REINFORCE's 500-move episodes, 177 the median). No
  saving. Before ``steps.noise``, unless on a CPU they waited off it (``waited_not_worked``).
- ``steps.noise`` too: sporadic outliers with no data wait that stay under
  ``MIN_SLOWDOWN`` x the median, or under ``MIN_EXCESS_NS`` over it (the same work, a little
  slower now and then; in steps of a fraction of a millisecond, a page fault).
- ``steps.noise`` too: a lone sporadic outlier with no data wait and no profiled op that
  grew (``MIN_RECURRENCE``): its thread's CPU time alone cannot tell more work from a VM's
  stolen time, page reclaim or a lower clock, and one sample is no pattern to act on.
- ``steps.outliers``: the rest. The saving is the outliers' excess over the median, spread
  over all steps: what removing or amortizing them would take off the mean step time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from dsprof.analyzers import step_verdict_words as words
from dsprof.analyzers.claims import DATA_WAIT
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.analyzers.step_differences import (
    extra_pass_words,
    extra_work,
    fix_for_causes,
    forward_steps,
    input_wait_fix,
    more_iterations,
    ops_that_grew,
    waited_not_worked,
)
from dsprof.analyzers.step_period import on_stride, period_of, periodic_work, sites_only_in
from dsprof.analyzers.step_saves import (
    checkpoint_evidence,
    checkpoint_fix,
    checkpoint_saves,
    checkpoint_words,
    evaluation_in,
    one_off_saves,
    periodic_switch,
)
from dsprof.analyzers.step_warmup import (
    WARMUP_FIX,
    leading_warmup,
    set_aside_text,
    span,
    warmup_prefix,
    warmup_title,
)
from dsprof.findings import Evidence, Finding
from dsprof.metrics.noise import has_column, outlier_limit, steady_steps

MIN_STEPS = 5
# Verdicts on work the script asks for: their own steps are listed apart from noise outliers.
OWN_WORK = ("steps.periodic", "steps.extra_work")
# Outliers are "noise on this machine" when at least this share of them waited off the CPU.
NOISE_SHARE = 0.5
# Sporadic outliers with no wait to explain them are step-to-step noise unless this much slower
# than the median, and this much longer (pytorch/examples' regression, 0.33 ms steps: one at
# 2.1x, 0.34 ms over, after the capture stopped; "saves 0.00691 ms/step" was ranked).
MIN_SLOWDOWN, MIN_EXCESS_NS = 1.5, 500_000
# Sporadic outliers with no data wait and no profiled op that grew must recur at least this
# often to be the program's: a lone slow step is one sample of an unknown cause.
MIN_RECURRENCE = 2
# A slow step is the garbage collector's when a collection took at least this share of the
# time it ran over the median (beyond the collections of a normal step).
GC_SHARE = 0.5


class StepOutliers(Analyzer):
    name = "step_outliers"
    requires = ("steps",)
    reads = (DATA_WAIT,)

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.disturbance:
            return (f"every step was disturbed ({ctx.disturbance}): no step time is "
                    "the program's")
        return None

    def run(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        for (rank,) in ctx.run.sql("SELECT DISTINCT rank FROM steps ORDER BY rank"):
            steady = [s for s, _, _ in steady_steps(ctx.run, int(rank))]
            gc = ("gc_ns, gc_generation" if has_column(ctx.run, "steps", "gc_ns")
                  else "NULL, NULL")  # runs recorded before the garbage collector's columns
            rows = ctx.run.sql(f"""
                SELECT step, start_ns, end_ns, dur_ns, cpu_ns, data_wait_ns, profiled, {gc}
                FROM steps WHERE rank = ? AND dur_ns > 0
                  AND step IN (SELECT unnest(?::BIGINT[])) ORDER BY step""", [rank, steady])
            if len(rows) >= MIN_STEPS:
                out.extend(self._rank(ctx, int(rank), rows))
        return out

    def _rank(self, ctx: Context, rank: int, rows: list[tuple]) -> list[Finding]:
        dur = np.array([r[3] for r in rows], np.float64)
        med = float(np.median(dur))
        limit = outlier_limit(dur)
        slow = [r for r in rows if r[3] > limit]
        if not slow:
            return []
        normal = [r for r in rows if r[3] <= limit]
        collected = _collector(normal, med)
        # Outliers that were the garbage collector are set aside (named in the explanation):
        # the verdict on the others must not borrow their slowdown or their time.
        set_aside = [r for r in slow if collected(r)]
        if len(set_aside) < len(slow):
            slow = [r for r in slow if not collected(r)]
        else:
            set_aside = []
        # so is a warm-up that other outliers follow: paid once, no saving to lend them
        warm = leading_warmup(slow, rows, MIN_STEPS,
                              lambda steps: on_stride(steps, slow, rows, med))
        slow = slow[len(warm):]
        finding = self._verdict(ctx, rank, rows, slow, normal, med, limit, set_aside, warm)
        if finding.kind not in ("steps.noise", "steps.outliers"):
            return [finding]
        # Outliers that did the script's own work (lines no normal step ran, another
        # DataLoader's pass) but carried under EXTRA_WORK_SHARE of the excess beside steps
        # that only ran slow: two verdicts, the work named as the script's and the rest judged
        # without it. Which steps did that work is a count, not a timing: the verdict on it
        # must not hang on how loaded the machine was (Keras' epoch-end validations read as
        # "6 of 162 steps are outliers" on a quiet machine whose 3 other steps ran slow).
        own = extra_work(ctx, rank, slow, normal, med, share=0.0)
        if own is None:
            return [finding]
        mine = [r for r in slow if int(r[0]) in own[0]]
        work = self._verdict(ctx, rank, rows, mine, normal, med, limit, set_aside, warm)
        if work.kind not in OWN_WORK:
            return [finding]
        rest = self._verdict(ctx, rank, rows, [r for r in slow if int(r[0]) not in own[0]],
                             normal, med, limit, [], [], own_work=(work.kind, mine))
        # one finding of a kind per rank (its id is kind and rank): a rest that is periodic
        # work too is left to the one verdict on all of them
        return [finding] if rest.kind == work.kind else [work, rest]

    def _verdict(self, ctx: Context, rank: int, rows: list[tuple], slow: list[tuple],
                 normal: list[tuple], med: float, limit: float, set_aside: list[tuple],
                 warm: list[tuple], own_work: tuple[str, list[tuple]] | None = None) -> Finding:
        """The verdict on the outliers ``slow`` of one rank's steady steps ``rows``."""
        collected = _collector(normal, med)
        excess = sum(r[3] - med for r in slow)
        base_wait = _median([r[5] for r in normal])
        base_off = _median([r[3] - r[4] for r in normal if r[4] is not None])
        base_cpu = _median([r[4] for r in normal])
        evidence = []
        causes: Counter[str] = Counter()
        gc_generations = set()
        more_work: set[int] = set()  # steps that did more work: CPU time or ops grew
        ops_grew: set[int] = set()  # of those, steps whose profiled ops show what grew
        for row in slow[:20]:
            step, start, end, d, cpu, wait, profiled, gc_ns, gc_gen = row
            parts = [f"step {step}: {d / 1e6:.1f} ms (median {med / 1e6:.1f} ms)"]
            extra = d - med
            if collected(row):
                # a collection: the runtime's work, whatever else the step did
                parts.append(f"Python garbage collection {gc_ns / 1e6:.1f} ms (generation "
                             f"{gc_gen})")
                causes["gc"] += 1
                gc_generations.add(gc_gen)
            elif wait is not None and base_wait is not None and wait - base_wait > 0.3 * extra:
                parts.append(f"data wait +{(wait - base_wait) / 1e6:.1f} ms")
                causes["data"] += 1
            # waiting for data is time off the CPU too (the workers load, or start: a spawn
            # DataLoader's first batch each epoch), but the script's, not the machine's noise
            data_extra = wait - base_wait if "data wait" in parts[-1] else 0
            if collected(row):
                pass  # on the CPU, in the collector: neither waiting nor the script's compute
            elif cpu is not None and base_off is not None and \
                    (d - cpu) - base_off - data_extra > 0.3 * extra:
                parts.append(f"off-CPU +{((d - cpu) - base_off) / 1e6:.1f} ms (waiting: I/O, "
                             "syncs, other processes)")
                causes["waiting"] += 1
            elif cpu is not None and base_off is not None and not data_extra:
                causes["compute"] += 1
            if not collected(row) and cpu is not None and base_cpu is not None and \
                    cpu - base_cpu > 0.3 * extra:
                # on a loaded machine a step that did more work also waits longer for a core:
                # both are said, so periodic work is not read as waiting alone
                parts.append(f"thread CPU +{(cpu - base_cpu) / 1e6:.1f} ms (more work)")
                more_work.add(int(step))
            if profiled:
                grew = ops_that_grew(ctx, rank, step, normal)
                if grew:
                    parts.append("grew: " + ", ".join(grew))
                    more_work.add(int(step))
                    ops_grew.add(int(step))
            evidence.append(Evidence("; ".join(parts), rank=rank, step=int(step),
                                     start_ns=int(start), end_ns=int(end), value=d / 1e6))
        period = period_of([int(r[0]) for r in slow], int(rows[0][0]), int(rows[-1][0]),
                           present={int(r[0]) for r in rows},
                           excess={int(r[0]): r[3] - med for r in slow})
        sites: list[str] = []
        if period:
            every, residue = period
            periodic = [r for r in slow if r[0] % every == residue]
            sites = sites_only_in(ctx, rank, [int(r[0]) for r in periodic],
                                   [int(r[0]) for r in normal])
            if not periodic_work(periodic[:20], more_work, sites):
                period = None  # steps at a stride that only waited: the off-CPU rule decides
        # steps that saved a checkpoint, at the saves' own stride (recorded in every step)
        saves = checkpoint_saves(ctx, rank, {int(r[0]): r[3] - med for r in slow})
        evaluation = None
        if saves is not None:
            # an evaluation before the save (its metrics' lines, or another loader's pass)
            evaluation = evaluation_in(
                ctx, rank, [r for r in slow if int(r[0]) in saves.excess_ms], normal, med,
                sites_only_in(ctx, rank, list(saves.excess_ms), [int(r[0]) for r in normal]))
            period, sites = (saves.every, saves.residue), saves.sites
        elif period:
            evaluation = evaluation_in(ctx, rank, [r for r in slow if r[0] % period[0] ==
                                                   period[1]], normal, med, sites)
        steps_txt = ", ".join(str(r[0]) for r in slow[:8]) + (" ..." if len(slow) > 8 else "")
        per_step = excess / len(rows) / 1e9
        kind = "steps.outliers"
        saving = per_step
        if warmup_prefix(slow, rows, MIN_STEPS):
            kind = "steps.warmup"
            saving = 0.0  # paid once: a longer run amortizes it, no change removes it
            title = warmup_title(slow, rows, rank, med)
            fix = WARMUP_FIX
        elif causes["gc"] == len(slow[:20]):
            kind = "steps.gc"
            saving = 0.0  # the runtime's periodic work: its cost is stated, not promised away
            title, fix = words.gc(slow, len(rows), rank, gc_generations)
        elif more_work and len(more_work) >= NOISE_SHARE * len(slow[:20]) and \
                forward_steps(ctx, rank, [int(r[0]) for r in slow]):
            kind = "steps.more_input"
            saving = 0.0  # what the script asked the model to compute
            title, fix = words.more_input(slow, len(rows), rank, med)
        elif period:
            every, residue = period
            periodic = [r for r in slow if r[0] % every == residue]
            kind = "steps.periodic"
            saving = 0.0  # work the script asks for: its cost is stated, not promised away
            where = f" at {', '.join(sites)}" if sites else ""
            # its own cost: the noise outliers between the periodic steps are not its work
            own = sum(r[3] - med for r in periodic) / len(rows) / 1e9
            title = (f"Every {every} steps a step runs "
                     f"{np.mean([r[3] for r in periodic]) / med:.1f}x slower (rank {rank}): "
                     + (checkpoint_words(saves, evaluation) if saves else
                        f"the script's periodic {evaluation.words}" if evaluation
                        else f"periodic work the script does{where}")
                     + f", {own * 1e3:.3g} ms {ctx.words.a_step} on average")
            fix = checkpoint_fix(ctx, saves, evaluation) if saves else \
                words.periodic_fix(every, sites, periodic_switch(ctx, every, bool(evaluation)))
            if saves:
                evidence.insert(0, Evidence(checkpoint_evidence(saves), rank=rank,
                                            site=sites[0] if sites else None))
            elif sites:
                evidence.insert(0, Evidence(f"ran only in the slow steps: {', '.join(sites)}",
                                            rank=rank, site=sites[0]))
        elif one_off := one_off_saves(ctx, rank, slow, med):  # a checkpoint saved once
            kind, saving, (title, fix), periodic = "steps.extra_work", 0.0, one_off, slow
        elif extra := extra_work(ctx, rank, slow, normal, med):
            # outliers that ran lines no other step ran, carrying most of the excess: an
            # evaluation or a checkpoint that came once (or at no stride) inside the counted
            # steps (an HF Trainer's evaluation every 12 steps, once in 24 counted steps)
            extra_steps, extra_sites, batches = extra
            kind = "steps.extra_work"
            saving = 0.0
            periodic = [r for r in slow if int(r[0]) in extra_steps]  # data.steps below
            own = sum(r[3] - med for r in periodic) / len(rows) / 1e9
            if batches:
                title, fix = extra_pass_words(ctx, periodic, rank, med, own, batches)
                if extra_sites:
                    evidence.insert(0, Evidence(f"ran only in the slow steps: "
                                                f"{', '.join(extra_sites)}",
                                                rank=rank, site=extra_sites[0]))
            else:
                title, fix = words.extra_lines(periodic, rank, med, extra_sites,
                                               f"{own * 1e3:.3g} ms {ctx.words.a_step}")
                evidence.insert(0, Evidence(f"ran only in the slow steps: "
                                            f"{', '.join(extra_sites)}",
                                            rank=rank, site=extra_sites[0]))
        elif not waited_not_worked(ctx, causes, more_work, len(slow[:20]), NOISE_SHARE) \
                and (more := more_iterations(ctx, rank, slow, normal, NOISE_SHARE)):
            kind = "steps.more_iterations"
            saving = 0.0  # the script gave those steps more of its own loop to run
            title, fix = words.more_iterations(slow, len(rows), rank, med, more.call,
                                               more.site, more.slow, more.normal)
        elif not ctx.on_gpu and causes["waiting"] >= NOISE_SHARE * len(slow[:20]):
            kind = "steps.noise"
            saving = 0.0
            title, fix = words.off_cpu(slow, len(rows), rank)
        elif not causes["data"] and (max(r[3] for r in slow) < MIN_SLOWDOWN * med
                                     or max(r[3] for r in slow) - med < MIN_EXCESS_NS):
            # the same work a little slower now and then, with no wait to explain it: caches,
            # clocks, the allocator, a page fault. Nothing the script can act on.
            kind = "steps.noise"
            saving = 0.0
            title, fix = words.jitter(slow, len(rows), rank, med, MIN_SLOWDOWN, MIN_EXCESS_NS)
        elif len(slow) < MIN_RECURRENCE and not causes["data"] and not ops_grew:
            # one slow step, once, with nothing dsprof can see that it did differently: a
            # thread's CPU time also grows with a VM's stolen time, page reclaim or a lower
            # clock, so one sample cannot tell the program from the machine (CI: one step
            # of fusion_mlp's eight steady ones at 1.5x read as a saving)
            kind = "steps.noise"
            saving = 0.0
            title, fix = words.once(slow[0], len(rows), rank, med)
        else:
            title = f"{len(slow)} of {len(rows)} steps are outliers on rank {rank} " \
                    f"(up to {max(r[3] for r in slow) / med:.1f}x the median)"
            fix = fix_for_causes(causes)
            if causes["data"]:
                # the input findings priced this wait first (claims.py): not saved twice
                covered = min(saving, ctx.claims.claimed_s(DATA_WAIT, rank))
                if covered > 0:
                    saving -= covered
                    evidence.append(Evidence(
                        f"the input findings already claim {covered * 1e3:.3g} ms "
                        f"{ctx.words.a_step} of the data wait in these steps: not counted "
                        "again here", rank=rank))
                if causes.most_common(1)[0][0] == "data":
                    # waits for data are the input pipeline's to price (one definition),
                    # with its fix: more workers do not help a loader rebuilt each epoch
                    saving = 0.0
                    fix = input_wait_fix(ctx, rank)
        cause_txt = ", ".join(f"{k} ({v})" for k, v in causes.most_common()) or "unknown"
        return Finding(
            analyzer=self.name, kind=kind, key=f"rank{rank}",
            title=title, saving_s=saving, confidence="medium" if causes else "low",
            explanation=(f"{'Step' if len(slow) == 1 else 'Steps'} {steps_txt} "
                         f"{'exceeds' if len(slow) == 1 else 'exceed'} the outlier limit of "
                         f"{limit / 1e6:.1f} ms "
                         f"(median {med / 1e6:.1f} ms). Together they run "
                         f"{excess / 1e6:.1f} ms over the median, {per_step * 1e3:.2f} ms "
                         f"{ctx.per_step} on average over {len(rows)} steps. Likely causes by "
                         f"step: {cause_txt}." + set_aside_text(set_aside, warm, med)
                         + (f" Left out as the script's own work ({own_work[0]}): "
                            f"{'step' if len(own_work[1]) == 1 else 'steps'} "
                            f"{span(own_work[1])}." if own_work else "")),
            evidence=tuple(evidence), fix=fix,
            verify=words.VERIFY.get(kind, words.VERIFY_GONE),
            data={"median_ms": med / 1e6, "limit_ms": limit / 1e6,
                  "period": period[0] if period else None,
                  "excess_ms_per_step": per_step * 1e3,
                  # periodic work: its own steps (a noise outlier between them is no part
                  # of it: steps 3, 11, 15 at a stride of 4, with 12 slow on a loaded machine)
                  "steps": [int(r[0]) for r in (periodic if kind in OWN_WORK else slow)],
                  **({"other_outliers": [int(r[0]) for r in slow if r not in periodic]}
                     if kind in OWN_WORK else {})})


def _collector(normal: list[tuple], med: float) -> Callable[[tuple], bool]:
    """Whether a slow step was the garbage collector's: a collection took GC_SHARE of its time
    over the median, beyond a normal step's collections."""
    base_gc = _median([r[7] for r in normal]) or 0
    return lambda r: r[7] is not None and r[7] - base_gc > GC_SHARE * (r[3] - med)


def _median(values: list) -> float | None:
    return float(np.median(vals)) if (vals := [v for v in values if v is not None]) else None
