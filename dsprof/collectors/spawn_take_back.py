"""Processes started through ``torch.multiprocessing.spawn`` that trained nothing: this process
profiles itself again.

At its first ``start_processes`` call the session hands its profiling over to the processes
the script starts (:mod:`dsprof.collectors.spawned_ranks`): PyTorch's DDP tutorial trains in
them while this process only waits. A script that spawns workers to prepare its data, then
trains here once they are done, lost all its steps so ("no step boundaries were seen" for
40 Adam steps after ``mp.spawn(prep, nprocs=2)``). So when ``start_processes`` returns (its
``join=True``: the processes are gone and their sessions saved) and no process recorded a
step, the hand-over is undone: their records go, and a new session starts for this process,
as the first did when the script imported torch; the old session passes its finish to it.
What this process did before the spawn is set-up and is not kept (the hand-over dropped it).
With ``join=False`` the processes are still running when the call returns: the same is decided
when the context's ``join()`` first says they all ended (``while not ctx.join(): pass``).
"""

from __future__ import annotations

import shutil
from typing import Any

from dsprof.frames import raised_in_signal_handler
from dsprof.log import logger


def trained_nothing(run: Any, nprocs: int) -> bool:
    """Whether every process the script started saved a record with no step in it."""
    from dsprof.ranks import read_record

    for r in range(nprocs):
        rec = read_record(run, r)
        if rec is None or rec.get("status") != "finished":
            return False
        boundaries = rec.get("boundaries_ns")
        if not isinstance(boundaries, list) or boundaries:
            return False
    return True


def take_back_when_joined(context: Any, session: Any, nprocs: int) -> None:
    """``context.join`` (torch's ProcessContext, ``join=False``) that decides, once it returns
    True, whether the processes were ranks: an attribute of this context only."""
    join = getattr(context, "join", None)
    if join is None:
        return

    def joined(*args: Any, **kwargs: Any) -> Any:
        done = join(*args, **kwargs)
        if done is True and session.spawned is not None and trained_nothing(session.run,
                                                                          nprocs):
            take_back(session, nprocs)
        return done

    try:
        context.join = joined
    except (AttributeError, TypeError):  # a context that takes no attribute: as before
        return


def take_back(session: Any, nprocs: int) -> None:
    """This process is the run again: the processes' records removed, a new session started
    in this one's place (``session.successor``), with what the run recorded of how it was
    started (``applied``, the script's environment at torch's import) carried over."""
    from dsprof.collectors.session import Session

    try:
        with session._finish_lock:
            if session._finished or session.spawned is None:
                return
            kept = {k: v for k, v in session.run.read_meta().items() if k in ("applied",)}
            for r in range(nprocs):
                shutil.rmtree(session.run.path / "raw" / f"rank{r}", ignore_errors=True)
            successor = Session(session.settings, session.run, session.target, session.ranks,
                                lock=session.lock, started_as=session.started_as)
            successor.on_fork_child.extend(session.on_fork_child)
            successor.start()
            successor.environment_at_load = session.environment_at_load
            if kept:
                session.run.update_meta(**kept)
            session.spawned = None
            session.successor = successor
        logger.info("the %d processes the script started through torch.multiprocessing "
                    "trained no step (data preparation, not ranks): dsprof profiles this "
                    "process again, from here", nprocs)
    except Exception as exc:  # the script goes on; the run stays the coordinator's
        if raised_in_signal_handler(exc):
            raise  # the script's own signal handler's: it is the script's
        logger.error("could not profile this process again after its spawned processes: "
                     "%s: %s", type(exc).__name__, exc)
