"""The framework's switch for work run every N steps (analyzers/step_saves.periodic_switch):
Ignite's event filter is the one the handler is on, per epoch or per iteration."""

from __future__ import annotations

from dsprof.analyzers.registry import Context
from dsprof.analyzers.step_saves import periodic_switch
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import steps, table


def _ignite(batches: int, passes: int) -> Context:
    meta = {"source": "run", "frameworks": ["ignite"],
            "target": {"kind": "script", "name": "train.py", "argv": ["train.py"]}}
    loaders = table({"loader": 0, "site": "train.py:40", "batches": batches,
                     "iterators": passes},
                    {"loader": 1, "site": "train.py:30", "batches": 4 * passes,
                     "iterators": passes}, rank=0)
    return Context(Run.from_tables(meta=meta, steps=steps([10] * 8), dataloaders=loaders))


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
