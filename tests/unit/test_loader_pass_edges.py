"""The DataLoader collector times the edges of a pass too: ``iter()``, where workers that do
not persist start (an epoch's first step waited 80-125 ms for them against 12.7 ms steps and
was read as time off the CPU, "noise on this machine"), and the ``__next__`` that ends the pass,
where they are stopped. Real DataLoaders with worker processes."""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, Sampler

from dsprof.collectors.dataloader import DataLoaderCollector

START_S = 0.06


class SlowStart(Sampler):
    """Indices whose iterator takes START_S to start: iter() of a loader with workers draws
    its first indices to prefetch, so the pass's start-up is in iter()."""

    def __len__(self) -> int:
        return 16

    def __iter__(self):
        time.sleep(START_S)
        return iter(range(16))


def test_iter_and_the_end_of_a_pass_are_the_steps_wait():
    data = [torch.full((4,), float(i)) for i in range(16)]
    loader = DataLoader(data, batch_size=4, sampler=SlowStart(), num_workers=2)
    collector = DataLoaderCollector()
    collector.install()
    try:
        waits = []
        for _epoch in range(2):
            it = iter(loader)
            waits.append(collector.take_step())  # the step that started the pass
            for _ in range(4):
                next(it)
            collector.take_step()
            try:
                next(it)
            except StopIteration:
                pass
            waits.append(collector.take_step())  # the step in which the pass ended
    finally:
        collector.uninstall()
    (row,) = collector.rows()
    # THEN each iter() is in its step's wait (no batch yet), and so is each pass's end
    starts, ends = waits[0::2], waits[1::2]
    assert all(w >= START_S * 1e9 and n == 0 for w, _, n in starts), starts
    assert all(w > 0 and n == 0 for w, _, n in ends), ends
    # AND the loader's totals: 8 batches in 2 passes, the start-ups in the passes' first waits
    assert (row["batches"], row["iterators"]) == (8, 2)
    assert row["first_wait_ns"] >= 2 * START_S * 1e9
    assert row["wait_ns"] > row["first_wait_ns"]
