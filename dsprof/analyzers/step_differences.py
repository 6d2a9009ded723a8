"""What differed in a run's slow steps from its normal ones, read from the tables every run has:
the source lines only the slow steps ran (host syncs), the ops whose self time grew, and
whether the steps are an inference run's forwards. analyzers/step_outliers.py's verdicts use
them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsprof.analyzers.claims import DATA_WAIT
from dsprof.analyzers.frameworks import frameworks, hf_arguments
from dsprof.analyzers.registry import Context
from dsprof.analyzers.step_warmup import span
from dsprof.metrics.noise import has_column

# Outliers that ran lines no normal step ran are the script's extra work when they carry at
# least this share of the outliers' excess time (the rest: noise outliers beside them).
EXTRA_WORK_SHARE = 0.6
# A step that got this many DataLoader batches more than a normal step iterated another
# loader's pass in it (one more is an epoch's end: its last and the next one's first batch).
EXTRA_BATCHES = 2

# (the outlier steps, the lines only they ran, (most batches, a normal step's) when it is
# DataLoader batches that tell them apart instead)
ExtraWork = tuple[set[int], list[str], tuple[int, int] | None]
# A line that ran this many times as often in an outlier as in a median normal step: the
# script's own loop ran longer in it (an RL episode to 500 moves, not 177)
MORE_ITERATIONS = 1.5


@dataclass(frozen=True)
class MoreIterations:
    """A source line the normal steps ran too, that most outliers ran ``MORE_ITERATIONS``
    times as often or more: the same work, more of it."""

    call: str
    site: str
    slow: float
    """Its calls in a median outlier."""
    normal: float
    """Its calls in a median normal step."""


def more_iterations(ctx: Context, rank: int, slow: list[tuple[Any, ...]],
                    normal: list[tuple[Any, ...]], share: float) -> MoreIterations | None:
    """The host-sync line that most outliers (``share`` of them) ran ``MORE_ITERATIONS``
    times as often as a median normal step (the one most outliers did so, then the most
    called), else None."""
    if not slow or not normal or not ctx.nonempty("host_syncs"):
        return None
    slow_steps, normal_steps = [int(r[0]) for r in slow[:20]], [int(r[0]) for r in normal]
    counts: dict[tuple[str, str], dict[int, int]] = {}
    for step, call, site, n in ctx.run.sql("""
            SELECT step, call, site, sum(count) FROM host_syncs
            WHERE rank = ? AND site IS NOT NULL AND step IN (SELECT unnest(?::BIGINT[]))
            GROUP BY ALL""", [rank, slow_steps + normal_steps]):
        counts.setdefault((str(call), str(site)), {})[int(step)] = int(n)
    best: tuple[int, float, MoreIterations] | None = None
    for (call, site), by_step in counts.items():
        usual = float(np.median([by_step.get(s, 0) for s in normal_steps]))
        if usual <= 0:
            continue  # a line of the slow steps alone: extra work, not more of the same
        theirs = [by_step.get(s, 0) for s in slow_steps]
        more = sum(n >= MORE_ITERATIONS * usual for n in theirs)
        if more < share * len(slow_steps):
            continue
        found = MoreIterations(call, site, float(np.median(theirs)), usual)
        if best is None or (more, usual) > best[:2]:
            best = (more, usual, found)
    return best[2] if best else None


def waited_not_worked(ctx: Context, causes: Counter[str], more_work: set[int], n: int,
                      share: float) -> bool:
    """On a CPU run, ``share`` of the ``n`` outliers spent their extra time off the CPU and
    fewer did more work (``more_work``): a line they ran more often is no cause then
    (LightningCLI's fit: a step that read the logged loss twice against once ran 6.4 ms over
    the median with its thread CPU at the median, 10.3 ms waiting for a CPU, and read as "more
    of the same work"). On a GPU, time off the CPU is waiting for kernels: the device's work."""
    return (not ctx.on_gpu and causes["waiting"] >= share * n
            and len(more_work) < share * n)


def forward_steps(ctx: Context, rank: int, steps: list[int]) -> bool:
    """Whether all of ``steps`` are inference forwards (``steps.source`` = ``forward``)."""
    if not has_column(ctx.run, "steps", "source"):
        return False
    (n,), = ctx.run.sql("""SELECT count(*) FROM steps WHERE rank = ? AND source = 'forward'
                           AND step IN (SELECT unnest(?::BIGINT[]))""", [rank, steps])
    return bool(n) and n == len(steps)



def extra_work(ctx: Context, rank: int, slow: list[tuple], normal: list[tuple],
               med: float, share: float = EXTRA_WORK_SHARE) -> ExtraWork | None:
    """The outliers that ran source lines no normal step ran (host syncs), and those lines (up
    to 3), when those outliers carry ``share`` of the excess; else the outliers that iterated
    more DataLoader batches than normal steps (:func:`extra_passes`); else None. With
    ``share=0`` it names every outlier that did such work, whatever the others' excess."""
    if not slow:
        return None
    if not ctx.nonempty("host_syncs"):
        return extra_passes(ctx, rank, slow, normal, med, share)
    rows = ctx.run.sql("""
        SELECT step, site FROM host_syncs
        WHERE rank = ? AND site IS NOT NULL AND step IN (SELECT unnest(?::BIGINT[]))
          AND site NOT IN (SELECT site FROM host_syncs WHERE rank = ? AND site IS NOT NULL
                           AND step IN (SELECT unnest(?::BIGINT[])))
        GROUP BY ALL ORDER BY step, site""",
                       [rank, [int(r[0]) for r in slow[:20]], rank,
                        [int(r[0]) for r in normal]])
    steps = {int(step) for step, _ in rows}
    excess = {int(r[0]): r[3] - med for r in slow}
    if not steps or sum(excess.get(s, 0) for s in steps) < share * sum(excess.values()):
        return extra_passes(ctx, rank, slow, normal, med, share)
    # lines of their own and another loader's batches: an evaluation whose loop reads its
    # metrics (the HF Trainer's eval loop, trainer_pt_utils.py:164, with 4 eval batches)
    passes = extra_passes(ctx, rank, [r for r in slow if int(r[0]) in steps], normal, med)
    batches = passes[2] if passes is not None and passes[0] == steps else None
    return steps, sorted({site for _, site in rows})[:3], batches


def extra_passes(ctx: Context, rank: int, slow: list[tuple[Any, ...]],
                 normal: list[tuple[Any, ...]], med: float,
                 share: float = EXTRA_WORK_SHARE) -> ExtraWork | None:
    """The outliers that got at least ``EXTRA_BATCHES`` more DataLoader batches than the
    normal steps' median (``steps.loader_batches``), with (most, normal), when they carry
    ``share`` of the excess; else None. A step that iterated another loader through
    ran an evaluation (Keras' ``fit(validation_split=...)`` at each epoch's end: 8 batches, 1
    in a normal step, 6x the median) or another pass the script asks for: its work, which a
    framework that reads no tensor with ``.item()`` leaves no host-sync line to name."""
    if not has_column(ctx.run, "steps", "loader_batches"):
        return None
    got = dict(ctx.run.sql("""SELECT step, loader_batches FROM steps WHERE rank = ?
                              AND loader_batches IS NOT NULL""", [rank]))
    usual = sorted(got[int(r[0])] for r in normal if int(r[0]) in got)
    if not usual:
        return None
    base = usual[len(usual) // 2]
    steps = {int(r[0]) for r in slow if got.get(int(r[0]), 0) >= base + EXTRA_BATCHES}
    # the share is of the work the outliers added (thread CPU over a normal step's): on a
    # loaded machine a dozen steps that only waited for a core carried 41 % of the wall-time
    # excess beside two epoch-end validations of Keras' fit, which added 12 ms of CPU each
    cpus = sorted(r[4] for r in normal if r[4] is not None)
    if cpus and all(r[4] is not None for r in slow):
        base_cpu = cpus[len(cpus) // 2]
        excess = {int(r[0]): max(r[4] - base_cpu, 0) for r in slow}
    else:
        excess = {int(r[0]): r[3] - med for r in slow}
    if not steps or sum(excess.get(s, 0) for s in steps) < share * sum(excess.values()):
        return None
    return steps, [], (max(got[s] for s in steps), base)



def extra_pass_words(ctx: Context, steps: list[tuple[Any, ...]], rank: int, med: float,
                     own: float, batches: tuple[int, int]) -> tuple[str, str]:
    """Title and fix of outliers that iterated another DataLoader's pass (an evaluation), in
    the framework's words where it has a switch for how often (Keras' ``validation_freq``)."""
    one = len(steps) == 1
    most, base = batches
    title = (f"{'Step' if one else 'Steps'} {span(steps)} on rank {rank} ran up to "
             f"{max(r[3] for r in steps) / med:.1f}x the median iterating {most} DataLoader "
             f"batches against {base} in a normal step: a pass over another loader (an "
             "evaluation), work the script asks for, "
             f"{own * 1e3:.3g} ms {ctx.words.a_step} on average, not a saving")
    fix = (f"# Nothing to remove: {'this step' if one else 'these steps'} also iterated another "
           f"DataLoader ({most} batches, {base} in a normal step),\n# an evaluation the "
           "script asks for. If it should cost less, evaluate less often or on fewer "
           "batches")
    used = frameworks(ctx)
    if "keras" in used:
        fix += (",\n# Keras: model.fit(..., validation_freq=N)  (validate every N epochs), "
                "or validation_steps=K")
    elif "ignite" in used:
        fix += (",\n# Ignite: the event filter of the handler that runs the evaluator, "
                "Events.ITERATION_COMPLETED(every=N) or Events.EPOCH_COMPLETED(every=N)")
    elif (switch := evaluation_switch(ctx)) is not None:
        fix += ",\n" + switch
    elif "skorch" in used:
        fix += (",\n# skorch: validate on less data (the rest then trains): "
                "NeuralNetClassifier(..., train_split=ValidSplit(10))  # 10 %, default 20 %")
    return title, fix + "."


def evaluation_switch(ctx: Context, every: int | None = None, epochs: int | None = None,
                      batches_per_step: int = 1) -> str | None:
    """The HF Trainer's or Lightning Trainer's own switch for how often it evaluates, or None
    for neither: with ``every`` (its stride in steps; ``epochs``, the whole epochs that is)
    the line to paste, without it the arguments to look at. A Seq2SeqTrainer's periodic
    evaluation every 16 steps was told ``if step % 64 == 0: ...``, a loop it does not have."""
    used = frameworks(ctx)
    if "lightning" in used:
        if every is None:
            return ("# Lightning: Trainer(..., check_val_every_n_epoch=N) or "
                    "val_check_interval=K (training batches), or limit_val_batches=K")
        if epochs:
            return (f"# Lightning: it validated every {_epochs(epochs)} ({every} steps)\n"
                    f"Trainer(..., check_val_every_n_epoch={4 * epochs})")
        # an int interval counts training batches, within each epoch unless
        # check_val_every_n_epoch=None (then across epochs: the only way past an epoch's length)
        per = (f"; it counts training batches, {batches_per_step} a step"
               if batches_per_step > 1 else "")
        return (f"# Lightning: it validated every {every} steps{per}\n"
                f"Trainer(..., val_check_interval={4 * every * batches_per_step}, "
                "check_val_every_n_epoch=None)")
    if "transformers.trainer" not in used:
        return None
    if every is None:
        return hf_arguments(ctx, "# Hugging Face: TrainingArguments(..., eval_steps=N) (a larger "
                                 "N), or a smaller eval_dataset")
    if epochs:
        # eval_strategy="epoch" has no every-N-epochs; eval_steps=<an epoch's steps> looks the
        # same from the steps: eval_strategy="steps" serves both
        return hf_arguments(ctx, f"# Hugging Face: it evaluated every {every} steps "
                                 f"({_epochs(epochs)}: eval_strategy=\"epoch\", or eval_steps="
                                 f"{every})\nTrainingArguments(..., eval_strategy=\"steps\", "
                                 f"eval_steps={4 * every})")
    return hf_arguments(ctx, "# Hugging Face: the Trainer's evaluation interval (in optimizer "
                             f"steps)\nTrainingArguments(..., eval_steps={4 * every})  # was "
                             f"{every}")


def _epochs(n: int) -> str:
    return f"{n} epochs" if n > 1 else "1 epoch"


def ops_that_grew(ctx: Context, rank: int, step: int, normal: list[tuple]) -> list[str]:
    """The three ops whose self time grew most against the median of the profiled normal
    steps."""
    ref = [int(r[0]) for r in normal if r[6]]
    if not ref or not ctx.run.has("ops"):
        return []
    rows = ctx.run.sql("""
        WITH per AS (
            SELECT step, name, sum(self_ns) AS t FROM ops
            WHERE rank = ? AND cat = 'cpu_op' AND step IN (SELECT unnest(?::BIGINT[]))
            GROUP BY step, name),
        base AS (SELECT name, median(t) AS t FROM per WHERE step <> ? GROUP BY name)
        SELECT p.name, p.t - coalesce(b.t, 0) AS grew FROM per p LEFT JOIN base b USING (name)
        WHERE p.step = ? ORDER BY grew DESC, p.name LIMIT 3""", [rank, [*ref, step], step, step])
    return [f"{name} +{g / 1e6:.1f} ms" for name, g in rows if g and g > 0]


def fix_for_causes(causes: Counter[str]) -> str:
    if causes and causes.most_common(1)[0][0] == "waiting":
        return ("# The slow steps waited off the CPU (I/O, host-device syncs, another process).\n"
                "# Look for file or network access and .item()/.cpu() calls in those steps:\n"
                "#   dsprof summary RUN   (host syncs per line)  and  DS_LOG_LEVEL=DEBUG")
    return ("# The slow steps did more work. Profile them: widen the window over them with\n"
            "#   dsprof run --wait N --active M ...  and compare their ops with a normal step.")


def input_wait_fix(ctx: Context, rank: int) -> str:
    """The fix of outliers that mostly waited for data: the input findings' (``claims.py``
    ``data_wait``), which price that wait; more workers do not help a loader rebuilt each
    epoch."""
    by = sorted({c.claimed_by.split(":")[0] for c in ctx.claims.by(DATA_WAIT)
                 if c.rank in (None, rank)})
    head = (f"# These steps waited for data; the input finding(s) {', '.join(by)} give the fix "
            "for that wait\n" if by else
            "# These steps waited for data: the input pipeline's findings price that wait "
            "(none was\n# made for this run)\n")
    return head + "#   dsprof analyze RUN --only input_pipeline"
