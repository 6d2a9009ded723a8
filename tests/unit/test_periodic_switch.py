"""The framework's switch for work run every N steps (analyzers/step_saves.periodic_switch):
Ignite's event filter is the one the handler is on, per epoch or per iteration; the HF and
Lightning Trainers' evaluation interval is their arguments'."""

from __future__ import annotations

from dsprof.analyzers.registry import Context
from dsprof.analyzers.step_saves import periodic_switch
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import steps, table


def _ignite(batches: int, passes: int, names: tuple[str, ...] = ("ignite",),
            loader_batches: int = 1) -> Context:
    meta = {"source": "run", "frameworks": list(names),
            "target": {"kind": "script", "name": "train.py", "argv": ["train.py"]}}
    loaders = table({"loader": 0, "site": "train.py:40", "batches": batches,
                     "iterators": passes},
                    {"loader": 1, "site": "train.py:30", "batches": 4 * passes,
                     "iterators": passes}, rank=0)
    return Context(Run.from_tables(meta=meta, dataloaders=loaders,
                                   steps=steps([10] * 8, loader_batches=[loader_batches] * 8)))


def test_work_at_each_epochs_end_gets_ignites_epoch_filter():
    # GIVEN an evaluator run at each epoch's end: 24 iterations a pass over the training loader
    fix = periodic_switch(_ignite(batches=120, passes=5), 24) or ""
    # THEN the filter is EPOCH_COMPLETED's, not an ITERATION_COMPLETED(every=24) it never had
    assert "Events.EPOCH_COMPLETED(every=4)" in fix and "ITERATION_COMPLETED" not in fix
    assert "every 1 epoch: 24 iterations" in fix
    # AND every second epoch is every=8
    assert "Events.EPOCH_COMPLETED(every=8)" in (periodic_switch(_ignite(120, 5), 48) or "")


def test_work_within_an_epoch_keeps_the_iteration_filter():
    fix = periodic_switch(_ignite(batches=120, passes=5), 12) or ""
    assert "Events.ITERATION_COMPLETED(every=48)" in fix and "# was every=12" in fix
    # AND passes of uneven length are not counted as epochs
    assert "ITERATION_COMPLETED" in (periodic_switch(_ignite(121, 5), 24) or "")


SEQ2SEQ = ("transformers", "transformers.trainer", "accelerate",
           "transformers.args:Seq2SeqTrainingArguments")


def test_a_trainers_periodic_evaluation_gets_its_eval_steps():
    # GIVEN a Seq2SeqTrainer evaluating every 16 steps, within its 120-step epochs
    fix = periodic_switch(_ignite(batches=600, passes=5, names=SEQ2SEQ), 16, evaluation=True)
    # THEN the switch is its arguments' interval, in the class it builds (the sweep's
    # Seq2SeqTrainer was told "if step % 64 == 0:  # was every 16 steps")
    assert fix is not None and fix.endswith(
        "Seq2SeqTrainingArguments(..., eval_steps=64)  # was 16"), fix
    # AND a Trainer that evaluated at each epoch's end (16 steps an epoch) is told the steps
    # strategy: eval_strategy="epoch" has no interval, and eval_steps=16 looks the same
    fix = periodic_switch(_ignite(batches=80, passes=5, names=SEQ2SEQ), 16, evaluation=True)
    assert fix is not None and fix.endswith(
        'Seq2SeqTrainingArguments(..., eval_strategy="steps", eval_steps=64)'), fix
    assert '(1 epoch: eval_strategy="epoch", or eval_steps=16)' in fix
    # AND periodic work that is no evaluation gets no evaluation switch
    assert periodic_switch(_ignite(600, 5, names=SEQ2SEQ), 16) is None


def test_a_lightning_validation_gets_its_interval():
    # GIVEN Lightning validating at each epoch's end (24 steps an epoch)
    fix = periodic_switch(_ignite(120, 5, names=("lightning",)), 24, evaluation=True)
    # THEN the interval is the Trainer's epochs
    assert fix is not None and fix.endswith("Trainer(..., check_val_every_n_epoch=4)"), fix
    # AND within an epoch it is val_check_interval, in training batches (2 a step here),
    # counted across epochs so that it may pass an epoch's length
    fix = periodic_switch(_ignite(240, 5, names=("lightning",), loader_batches=2), 12,
                          evaluation=True)
    assert fix is not None and fix.endswith(
        "Trainer(..., val_check_interval=96, check_val_every_n_epoch=None)"), fix
    assert "training batches, 2 a step" in fix
