"""Ranks merged as still running that finished afterwards (dsprof/ranks.py merges).

A SIGTERM'd coordinator merges after waiting 3 s for its ranks; a rank hung in its script's
exit ends after any wait. The merge then says "still running ... no per-step timings", while
the ingest, later, reads the rank's finished record and its steps: meta.json and the steps
table would disagree. The ingest calls :func:`refresh_late_ranks` first.
"""

from __future__ import annotations

from dsprof.log import logger
from dsprof.ranks import STILL_RUNNING, finished_reason, read_record
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
