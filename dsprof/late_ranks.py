"""Ranks merged late: after the merge (dsprof/ranks.py merges), or with no merge at all.

A SIGTERM'd coordinator merges after waiting 3 s for its ranks; a rank hung in its script's
exit ends after any wait. The merge then says "still running ... no per-step timings", while
the ingest, later, reads the rank's finished record and its steps: meta.json and the steps
table would disagree. The ingest calls :func:`refresh_late_ranks` first.

A coordinator killed outright (rank 0 under the user's torchrun, taken by the out-of-memory
killer) merges nothing: meta.json stays as it started, and the other ranks' records, which say
how each of them ended, would go unread. :func:`merge_orphaned_ranks` merges them at the
first ingest.
"""

from __future__ import annotations

from dsprof.log import logger
from dsprof.ranks import STILL_RUNNING, finished_reason, merge_ranks, read_record
from dsprof.rundir import RunDir


def refresh_late_ranks(run: RunDir) -> None:
    """Ranks merged as still running whose sessions have finished since: their entries are
    what the merge would say now, so that meta.json and the steps the ingest reads from their
    records agree. Other entries stay as merged (what the launcher saw is not kept to merge
    again); a first failure that ended well is no first failure any more."""
    meta = run.read_meta()
    failed = meta.get("rank_failures")
    if not isinstance(failed, dict) or not failed:
        return
    failed = dict(failed)
    lead = meta.get("first_failure")
    first = lead.get("rank") if isinstance(lead, dict) else None
    changes: dict[str, object] = {}
    for r, why in list(failed.items()):
        if not (isinstance(why, str) and why.startswith(STILL_RUNNING) and r.isdigit()):
            continue
        rec = read_record(run, int(r))
        if rec is None or rec.get("status") != "finished":
            continue
        now, interrupted = finished_reason(rec)
        logger.debug("rank %s finished after the run was merged: %s", r, now or "it ended well")
        if str(first) == r:
            if now is None:  # the others came "after" nothing
                first = None
                changes["first_failure"] = None
                failed = {k: w.replace(f"; after rank {r} failed", "") if isinstance(w, str)
                          else w for k, w in failed.items()}
            else:
                changes["first_failure"] = {"rank": int(r), "why": now}
        if now is None:
            del failed[r]
        else:
            after = first is not None and str(first) != r and not interrupted
            failed[r] = now + (f"; after rank {first} failed" if after else "")
        changes.update(rank_failures=failed, partial=bool(failed))
    if changes:
        run.update_meta(**changes)


def merge_orphaned_ranks(run: RunDir) -> None:
    """A multi-rank run whose coordinator ended without merging (its meta.json still says
    running, and nobody holds the run's lock: the caller checked): the ranks' records merged
    now. The status stays "running" (the job's end was never recorded, and the summary says
    the run did not finish); the coordinator's rank is among the failures as the merge finds
    it (killed without running Python's exit, unless its process still runs here)."""
    meta = run.read_meta()
    world = meta.get("world_size")
    if meta.get("status") != "running" or "rank_failures" in meta or \
            not isinstance(world, int) or isinstance(world, bool) or not 1 < world <= 65536:
        return
    merged = merge_ranks(run, world)
    merged.pop("end_time", None)  # when this ran, not when the job ended
    logger.info("the run's coordinator ended without merging its %d ranks; merged now", world)
    run.update_meta(**merged, coordinator_lost=True)
