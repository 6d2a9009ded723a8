"""Checkpoints saved every N steps among a run's slow steps, for
:mod:`dsprof.analyzers.step_outliers`.

The stride is read from the steps that called ``torch.save`` (``steps.save_ns``, every step of a
``dsprof run``, collectors/save_watch.py), not from the outliers alone: a Lightning run of 40
steps with ``ModelCheckpoint(every_n_train_steps=10)`` saved in steps 10, 20 and 30, but step 10
wrote the profiler's trace (left out), so two slow steps remained, too few for a stride of
outliers, and the two read as "outliers" whose removal would save 0.9 ms a step. Slow steps at
the saves' stride are the script's periodic work: its cost is stated, no saving.

What the save is of that work: ``torch.save``'s own time is a lower bound of a checkpoint's
cost (Lightning also builds the checkpoint dict and writes the serialized bytes to the file
after ``torch.save`` filled a buffer: 37 of the 149 ms a saving step ran over the median), and
an evaluation done in the same steps costs more still (examples/periodic_eval.py: 9.5 of 113
ms). So the title says "periodic checkpoint saving" only when the saves took at least
``MAIN_SHARE`` of those steps' excess, else "periodic work ..., a checkpoint save among it",
and always states the two times.

An evaluation in those steps is named as one when lines of a metrics library (``ignite/metrics``,
``torchmetrics``, ``sklearn/metrics``, ``evaluate``) ran only in them (host syncs, every step):
an Ignite evaluator run every 12 iterations by an ``Events.ITERATION_COMPLETED(every=12)``
handler, whose ``ModelCheckpoint`` saved after it, took 4.4 of a step's 5.05 ms over the median
and read as "periodic work ..., a checkpoint save among it". Ignite's switch for either is the
event filter: ``Events.ITERATION_COMPLETED(every=N)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dsprof.analyzers.frameworks import frameworks, hf_arguments
from dsprof.analyzers.registry import Context
from dsprof.analyzers.step_differences import evaluation_switch, extra_passes
from dsprof.analyzers.step_period import period_of
from dsprof.metrics.noise import has_column
from dsprof.render.safe_text import one_line

# folders of metrics libraries: their lines running only in the slow steps mean an evaluation
_METRICS_DIRS = frozenset(("metrics", "torchmetrics", "evaluate"))
# share of the outliers' excess time the saving steps must carry to be the verdict
SAVES_SHARE = 0.6
# share of the saving steps' own excess that torch.save must take to be named as the work
MAIN_SHARE = 0.5
# what collectors/save_watch.py records in steps.save_call; the call is written into the fix's
# code, so a run directory's other text there is read as torch.save
SAVE_CALLS = frozenset({"torch.save", "torch.distributed.checkpoint.save",
                        "torch.distributed.checkpoint.async_save"})


class CheckpointSaves(NamedTuple):
    """Steps that saved a checkpoint every ``every`` steps (step % every == residue)."""

    every: int
    residue: int
    sites: list[str]  # the lines that called torch.save in the slow saving steps
    save_ms: dict[int, float]  # slow saving step -> the time torch.save took in it
    excess_ms: dict[int, float]  # slow saving step -> its time over the median
    steps: list[int]  # every step that saved at the stride
    call: str = "torch.save"  # what the slow saving steps called (steps.save_call)

    @property
    def short(self) -> str:
        """The call as scripts write it: ``dcp.save`` for DCP's."""
        return self.call.replace("torch.distributed.checkpoint.", "dcp.")


def checkpoint_saves(ctx: Context, rank: int, excess: dict[int, float]) -> CheckpointSaves | None:
    """The saves' stride when ``torch.save`` ran every N steps (at least 3 times) and the slow
    steps at that stride that saved carry ``SAVES_SHARE`` of the outliers' ``excess`` (step ->
    ns over the median), else None."""
    if not excess or not has_column(ctx.run, "steps", "save_ns"):
        return None
    call = "save_call" if has_column(ctx.run, "steps", "save_call") else "NULL"
    rows = ctx.run.sql(f"""SELECT step, save_ns, save_site, {call} FROM steps
                          WHERE rank = ? AND save_ns > 0 ORDER BY step""", [rank])
    saves = {int(step): (int(ns), site) for step, ns, site, _ in rows}
    calls = {int(step): c for step, _, _, c in rows if c in SAVE_CALLS}
    if len(saves) < 3:
        return None
    (last,), = ctx.run.sql("SELECT max(step) FROM steps WHERE rank = ?", [rank])
    # from the first save: a run saves after its first N steps, not at step 0
    period = period_of(sorted(saves), min(saves), int(last))
    if period is None:
        return None
    every, residue = period
    hits = [s for s in excess if s in saves and s % every == residue]
    if not hits or sum(excess[s] for s in hits) < SAVES_SHARE * sum(excess.values()):
        return None
    sites = sorted({str(saves[s][1]) for s in hits if saves[s][1]})[:3]
    hits.sort()
    named = sorted({calls[s] for s in hits if s in calls})
    return CheckpointSaves(every, residue, sites, {s: saves[s][0] / 1e6 for s in hits},
                           {s: excess[s] / 1e6 for s in hits},
                           [s for s in sorted(saves) if s % every == residue],
                           named[0] if len(named) == 1 else "torch.save")


class Evaluation(NamedTuple):
    """An evaluation found in periodic steps: how to say it, and its metrics' lines."""

    words: str  # "evaluation (metrics at ...)"
    sites: list[str]


def evaluation_sites(sites: list[str]) -> list[str]:
    """The lines of ``sites`` (``path:line``) in a metrics library's folder: an evaluation's."""
    return [s for s in sites if _METRICS_DIRS & set(s.rsplit(":", 1)[0].split("/")[:-1])]


def evaluation_in(ctx: Context, rank: int, steps: list[tuple[Any, ...]],
                  normal: list[tuple[Any, ...]], med: float,
                  sites: list[str]) -> Evaluation | None:
    """The evaluation the periodic ``steps`` (step rows) ran: metrics-library lines among the
    ``sites`` only they ran, or a pass over another DataLoader (``extra_passes``: skorch's
    validation split, whose loss is read at the same line as the training batches'); None."""
    metrics = evaluation_sites(sites)
    if metrics:
        return Evaluation(f"evaluation (metrics at {', '.join(metrics)})", metrics)
    extra = extra_passes(ctx, rank, steps, normal, med)
    if extra is not None and extra[2] is not None:
        most, base = extra[2]
        # batches of every loader the step iterated: an HF evaluation of 4 batches in a step
        # that also got its training batch read "4 batches" as 5 (it said "5 batches, 1 in a
        # normal step", the evaluation's own count taken for the pass's)
        return Evaluation(f"evaluation (a pass over another DataLoader: the step read {most} "
                          f"batches of any loader, a normal step {base})", [])
    return None


def checkpoint_words(saves: CheckpointSaves, evaluation: Evaluation | None = None) -> str:
    """What the periodic steps did, for the title: the checkpointing, or work with a save in
    it (an evaluation when its metrics' lines ran there), with torch.save's time against the
    steps' time over the median (means)."""
    save = sum(saves.save_ms.values()) / len(saves.save_ms)
    over = sum(saves.excess_ms.values()) / len(saves.excess_ms)
    where = f" at {', '.join(saves.sites)}" if saves.sites else ""
    times = f"{save:.3g} ms of the {over:.3g} ms over the median"
    if evaluation and save < MAIN_SHARE * over:
        return (f"the script's periodic evaluation and checkpointing: an {evaluation.words}, then "
                f"a checkpoint save ({saves.short}{where}: {times})")
    if save >= MAIN_SHARE * over:
        return f"the script's periodic checkpoint saving ({saves.short}{where}: {times})"
    return (f"periodic work the script does, a checkpoint save among it ({saves.short}{where}: "
            f"{times})")


def periodic_switch(ctx: Context, every: int, evaluation: bool = False) -> str | None:
    """The framework's own switch for work run every ``every`` steps by an event handler
    (Ignite) or at each epoch's end (skorch, Keras' fit), or for an ``evaluation`` the HF or
    Lightning Trainer runs every ``every`` steps (its interval), or None: the caller gives its
    framework's or the plain loop's."""
    used = frameworks(ctx)
    if "ignite" in used:
        epochs = _epochs_in(ctx, every)
        if epochs:  # a handler at each epoch's end (an evaluator on EPOCH_COMPLETED)
            return (f"# Ignite: the handler's event filter (it ran every {epochs} epoch"
                    f"{'s' if epochs > 1 else ''}: {every} iterations)\n"
                    f"trainer.add_event_handler(Events.EPOCH_COMPLETED(every={4 * epochs}), "
                    "handler)")
        return (f"# Ignite: the handler's event filter\n"
                f"trainer.add_event_handler(Events.ITERATION_COMPLETED(every={4 * every}), "
                f"handler)  # was every={every}")
    if "keras" in used:
        # Keras' fit validates at each epoch's end (validation_split / validation_data)
        return ("# Keras: fit validates at each epoch's end; validate every 4th epoch, or on "
                "fewer batches:\nmodel.fit(..., validation_freq=4)  # or validation_steps=K")
    if "skorch" in used:
        # skorch validates and runs its callbacks at every epoch's end; Checkpoint's monitor
        # may be a function of the net that says whether this epoch saves
        return ("# skorch: validation and callbacks run at each epoch's end. Save every 4th "
                "epoch:\n"
                "def every_4th_epoch(net):\n"
                "    return len(net.history) % 4 == 0\n"
                "Checkpoint(..., monitor=every_4th_epoch)\n"
                "# or validate on less data (the rest then trains): NeuralNetClassifier(..., "
                "train_split=ValidSplit(10))  # 10 %, default 20 %")
    if evaluation:
        return evaluation_switch(ctx, every, _epochs_in(ctx, every), _batches_per_step(ctx))
    return None


def _epochs_in(ctx: Context, every: int) -> int | None:
    """How many passes over the training DataLoader ``every`` steps are (the loader that gave
    the most batches, ``batches / iterators`` a pass), where a whole number; else None. An
    Ignite evaluator run at each epoch's end (24 iterations) was told
    ``ITERATION_COMPLETED(every=96)  # was every=24``, a filter the script does not have."""
    if not ctx.nonempty("dataloaders"):
        return None
    row = ctx.run.sql("SELECT batches, iterators FROM dataloaders WHERE iterators > 0 "
                      "ORDER BY batches DESC LIMIT 1")
    if not row or not row[0][1]:
        return None
    batches, passes = (int(v) for v in row[0])
    # a step that accumulates k batches (Lightning's accumulate_grad_batches) is k of them
    per_step = _batches_per_step(ctx)
    # a pass's length varies by one with drop_last=False and an uneven last batch: whole ones
    if batches % passes or (batches // passes) % per_step:
        return None
    per_pass = batches // passes // per_step
    if per_pass < 2 or every % per_pass:
        return None
    return every // per_pass


def _batches_per_step(ctx: Context) -> int:
    """The batches a median step read (``steps.loader_batches``), 1 where unrecorded."""
    if not has_column(ctx.run, "steps", "loader_batches"):
        return 1
    (n,), = ctx.run.sql("SELECT median(loader_batches) FROM steps WHERE loader_batches > 0")
    return max(int(n or 1), 1)


def _lightning_async(ctx: Context) -> str:
    """The Lightning Trainer's own switch for saving off the training thread (its checkpoint
    IO in a thread: lightning 2.6's ``AsyncCheckpointIO``), or "" outside the Trainer."""
    if "lightning" not in frameworks(ctx):
        return ""
    names = {str(f) for f in ctx.meta.get("frameworks") or []}
    package = ("pytorch_lightning" if "pytorch_lightning" in names and "lightning" not in names
               else "lightning.pytorch")
    return f"Trainer(..., plugins=[AsyncCheckpointIO()]), from {package}.plugins"


def checkpoint_evidence(saves: CheckpointSaves) -> str:
    """The saving steps and the save's time in the slow ones."""
    shown = ", ".join(map(str, saves.steps[:8])) + (" ..." if len(saves.steps) > 8 else "")
    return (f"{saves.short} ran every {saves.every} steps (steps {shown}); in the slow ones it "
            "took " + ", ".join(f"{ms:.1f} ms of {saves.excess_ms[s]:.1f} ms over the median "
                                f"(step {s})" for s, ms in saves.save_ms.items()))


def checkpoint_fix(ctx: Context, saves: CheckpointSaves,
                   evaluation: Evaluation | None = None) -> str:
    """Save (and evaluate) less often or off the training thread, in the framework's own
    words."""
    used = frameworks(ctx)
    where = ", ".join([*(evaluation.sites if evaluation else []), *saves.sites])
    where = f"\n# ({one_line(where)})" if where else ""
    less = 4 * saves.every
    if (ignite := periodic_switch(ctx, saves.every)) is not None:
        switch = ignite
    elif "lightning" in used and (epochs := _epochs_in(ctx, saves.every)):
        # saves at an epoch's stride: the callback's epoch interval (darts' ModelCheckpoint
        # saving each epoch of 8 steps was told "every_n_train_steps=32  # was 8", an
        # argument it never had); what it was set to is not known, only when it saved
        switch = (f"ModelCheckpoint(..., every_n_epochs={4 * epochs})  # it saved every "
                  + (f"{epochs} epochs" if epochs > 1 else "epoch") + f" ({saves.every} steps)")
    elif "lightning" in used:
        switch = f"ModelCheckpoint(..., every_n_train_steps={less})  # was {saves.every}"
    elif "transformers.trainer" in used:
        switch = hf_arguments(ctx, f"TrainingArguments(..., save_steps={less})  # was "
                                   f"{saves.every}")
    else:
        switch = (f"if step % {less} == 0:  # was every {saves.every} steps\n"
                  + ("    evaluate(...)\n" if evaluation else "") + f"    {saves.short}(...)")
    save = sum(saves.save_ms.values()) / len(saves.save_ms)
    over = sum(saves.excess_ms.values()) / len(saves.excess_ms)
    what = (f"A checkpoint saved every {saves.every} steps runs" if save >= MAIN_SHARE * over
            else f"An evaluation and a checkpoint save every {saves.every} steps run"
            if evaluation else
            f"Work done every {saves.every} steps, a checkpoint save among it, runs")
    lightning_async = _lightning_async(ctx)
    return (f"# {what} on the training thread{where}.\n# It is work the script asks for; if "
            "it should cost less, do it less often or off\n# the critical path "
            + ("(the save is DCP's async_save already: its time here is the copy it\n# "
               "stages before the write), e.g.:\n"
               if saves.call.endswith("async_save") else
               f"(for the save: {lightning_async}), e.g.:\n" if lightning_async else
               "(torch.distributed.checkpoint.async_save for the save), e.g.:\n") + switch)


def one_off_saves(ctx: Context, rank: int, slow: list[tuple[Any, ...]],
                  med: float) -> tuple[str, str] | None:
    """Outliers at no stride whose steps called ``torch.save`` (``steps.save_ns``) and carry
    ``SAVES_SHARE`` of the outliers' excess: a checkpoint the script saved once (or at no
    stride), as ``(title, fix)``; None otherwise. A mid-run save after step 29 of 60 made
    step 30 3.8x the median and read as "nothing dsprof saw it do differently" (its thread CPU
    +33 ms, torch.save's 12.2 ms among it); an HF Trainer's one save in 60 steps likewise."""
    if not slow or not has_column(ctx.run, "steps", "save_ns"):
        return None
    call = "save_call" if has_column(ctx.run, "steps", "save_call") else "NULL"
    saved = {int(step): (int(ns), site, c) for step, ns, site, c in ctx.run.sql(
        f"""SELECT step, save_ns, save_site, {call} FROM steps
            WHERE rank = ? AND save_ns > 0 AND step IN (SELECT unnest(?::BIGINT[]))""",
        [rank, [int(r[0]) for r in slow]])}
    excess = {int(r[0]): r[3] - med for r in slow}
    hits = sorted(s for s in excess if s in saved)
    if not hits or sum(excess[s] for s in hits) < SAVES_SHARE * sum(excess.values()):
        return None
    sites = sorted({str(saved[s][1]) for s in hits if saved[s][1]})[:3]
    calls = {saved[s][2] for s in hits}
    shown = (calls.pop() if len(calls) == 1 and None not in calls and calls <= SAVE_CALLS
             else "torch.save").replace("torch.distributed.checkpoint.", "dcp.")
    where = f" at {one_line(', '.join(sites))}" if sites else ""
    save_ms = sum(saved[s][0] for s in hits) / len(hits) / 1e6
    over_ms = sum(excess[s] for s in hits) / len(hits) / 1e6
    one = len(hits) == 1
    title = (f"{'Step' if one else 'Steps'} {', '.join(map(str, hits[:8]))} on rank {rank} "
             f"ran up to {max(r[3] for r in slow if int(r[0]) in hits) / med:.1f}x the median "
             f"saving a checkpoint ({shown}{where}: {save_ms:.3g} ms of the {over_ms:.3g} ms "
             "over the median): work the script asks for, not a saving")
    fix = (f"# Nothing to remove: {'this step' if one else 'these steps'} saved a checkpoint"
           f"{' (' + one_line(', '.join(sites)) + ')' if sites else ''}.\n# Its time is the "
           "save's (building the state dicts, serializing, writing); to take it off\n# the "
           f"training thread, {_lightning_async(ctx) or 'torch.distributed.checkpoint.async_save'}"
           ".")
    return title, fix

