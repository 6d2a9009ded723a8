"""DataLoader worker start-up each pass: the wait that more workers do not shorten.

A DataLoader with workers and ``persistent_workers=False`` starts its workers at every
``iter()`` (each epoch), and a script that builds the DataLoader anew each epoch starts them
even with ``persistent_workers=True``: the workers die with the loader. The first batch of each
pass then waits for the workers to start (a spawn worker imports torch again: ~4.7 s on the
2-core machine of 4 Dec, 3 epochs of a 6-batch pass, against 53 ms for the pass's other 5
batches together). Read as slow loading, that wait asked for more workers, which only start
more processes; what removes it is keeping the workers: one DataLoader, built before the epoch
loop, with ``persistent_workers=True``. Reported when the first batches of the passes hold most
of the wait and there was more than one pass (one pass pays its start-up once, whatever the
settings). Saving: the counted steps' mean wait less the mean wait of a batch that was not a
pass's first (the one start-up left is the first pass's, in the setup step).
"""

from __future__ import annotations

from typing import Any

from dsprof.analyzers.frameworks import framework_fix
from dsprof.findings import Evidence, Finding

# the first batches of the passes hold at least this share of the loader's wait
STARTUP_SHARE = 0.5


def startup_finding(ctx: Any, rank: int, wait: float, dur: float, verify: str,
                    analyzer: str) -> Finding | None:
    """The per-pass worker start-up finding for ``rank``'s most-waited loader site, or None.
    ``wait``/``dur``: the mean data wait and step time of the counted steps (ns)."""
    rows = ctx.run.sql("""
        SELECT site, any_value(dataset), count(*), sum(iterators), sum(batches), sum(wait_ns),
               sum(first_wait_ns), max(num_workers), bool_or(persistent_workers)
        FROM dataloaders WHERE rank = ? GROUP BY site ORDER BY sum(wait_ns) DESC LIMIT 1""",
                          [rank])
    if not rows:
        return None
    site, dataset, loaders, passes, batches, total, first, workers, persistent = rows[0]
    loaders, passes, batches = int(loaders or 0), int(passes or 0), int(batches or 0)
    total, first = float(total or 0), float(first or 0)
    if not workers or passes < 2 or total <= 0 or first < STARTUP_SHARE * total:
        return None
    if loaders < 2 and persistent:
        return None  # one loader whose workers persist: its one start-up is the first pass's
    other = (total - first) / max(batches - passes, 1)  # a batch that was not a pass's first
    saving = wait - other
    if saving <= 0:
        return None
    rebuilt = loaders >= 2
    per_pass = first / passes
    title = (f"Keep the DataLoader's {workers} workers across epochs: each of {passes} passes "
             f"waited {per_pass / 1e6:.1f} ms for its first batch while they started")
    why = (f"The DataLoader at {site} is built anew for each pass ({loaders} loaders), and its "
           "workers end with it" if rebuilt else
           f"The DataLoader at {site} has persistent_workers=False, so every iter() starts "
           "its workers again")
    explanation = (
        f"{why}. The first batches of the {passes} passes waited {first / 1e6:.1f} ms of the "
        f"{total / 1e6:.1f} ms this loader waited in all; its other batches "
        f"{other / 1e6:.2f} ms each. More workers would not shorten the start-up (they start "
        "together, each a new process). Over the counted steps the mean wait is "
        f"{wait / 1e6:.1f} ms of a {dur / 1e6:.1f} ms step; without the start-ups it would be "
        "about the other batches' wait.")
    n = int(workers)
    fix = ("# build the loader once, before the epoch loop, and keep its workers:\n"
           f"loader = DataLoader(dataset, ..., num_workers={n},\n"
           "                    persistent_workers=True)\n"
           "for epoch in range(epochs):\n"
           "    for batch in loader:   # the same loader: workers start once\n"
           "        ...")
    if not rebuilt:
        fix = (f"loader = DataLoader(dataset, ..., num_workers={n},\n"
               "                    persistent_workers=True)  # workers start once")
    return Finding(
        analyzer=analyzer, kind="input.worker_startup", key=f"{site}|{dataset}",
        title=title, saving_s=saving / 1e9, confidence="high", explanation=explanation,
        evidence=(Evidence(f"DataLoader({dataset}) at {site}: {loaders} loader(s), {passes} "
                           f"passes, {batches} batches; first batches {first / 1e6:.1f} ms, "
                           f"all {total / 1e6:.1f} ms", rank=rank, site=site,
                           value=first / 1e6),),
        fix=framework_fix(ctx, "dataloader") + fix, verify=verify,
        data={"workers": int(workers), "loaders": loaders, "passes": passes,
              "first_wait_ms": first / 1e6, "other_batch_wait_ms": other / 1e6,
              "wait_ms": wait / 1e6, "rebuilt": rebuilt})
