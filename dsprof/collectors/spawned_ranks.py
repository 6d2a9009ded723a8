"""Ranks the script starts itself with ``torch.multiprocessing.spawn`` / ``start_processes``.

PyTorch's DDP tutorial starts its ranks so: ``mp.spawn(train, args=(world,), nprocs=world)``.
The profiled process then only waits; the training runs in fresh interpreters that dsprof's
hooks never reach. So the session of ``dsprof run`` replaces ``start_processes`` (both
``torch.multiprocessing.spawn`` and ``torch.multiprocessing.start_processes`` call it) for
the script's run, and at the first call:

* this process hands its profiling over (:func:`hand_over`): its collectors stop,
  what it recorded of itself is dropped (its waiting is no step of the training) and
  ``raw/rank0/`` is left to the rank 0 it starts; it becomes the coordinator, as the
  ``dsprof run --nproc-per-node`` process is (meta.json says ``launcher:
  torch.multiprocessing.spawn``);
* the function it starts is wrapped in :class:`SpawnedRank`, a picklable object that holds
  the script's function, the run directory and the settings: in each child it starts a rank
  session (rank = the process index, ``world_size`` = nprocs), calls the function and
  finishes the session however the function ends, then lets the exception or exit go on
  unchanged (without its own frame: torch forwards the child's traceback text to the parent,
  where ``ProcessRaisedException`` must read as it would without dsprof);
* a rank that torch SIGTERMs (because another failed) saves its session, then dies of the
  signal as it would without dsprof (:func:`_watch_sigterm`);
* when the script ends, the session merges the ranks' records into meta.json the way
  :mod:`dsprof.launch_ranks` does (:func:`finish_coordinator`), and the run is ingested once.

Processes that recorded no step when ``join=True`` returns were not ranks (the script's data
preparation): this process profiles itself again (:mod:`dsprof.collectors.spawn_take_back`).

Only this path is followed: DataLoader workers and other ``multiprocessing`` processes are
started through ``multiprocessing`` itself and stay what they are. Not followed, with a line
that says so (meta.json ``spawned_unprofiled``): ``start_method="fork"`` (the child is a copy
of this process with its profiler mid-use, see :mod:`dsprof.collectors.forked_child`), a
second ``start_processes`` call in one run (its ranks would overwrite the first's), and
calls from a process that is itself a rank.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from dsprof.collectors.spawn_take_back import take_back, take_back_when_joined, trained_nothing
from dsprof.frames import raised_in_signal_handler
from dsprof.log import SESSION_NOT_STARTED, logger
from dsprof.manifest import SPAWNED_BY_SCRIPT
from dsprof.peer_loss import lost_a_peer

LAUNCHER = SPAWNED_BY_SCRIPT
# how long the coordinator waits at the script's end for ranks still saving (join=False)
RANK_WAIT_S = 30.0

_original: Any = None  # torch's start_processes, while dsprof's stands in its place
_session: Any = None  # the session that coordinates the ranks the script starts


def install(session: Any) -> None:
    """Put :func:`start_processes` in torch's place for ``session``'s script."""
    global _original, _session
    import torch.multiprocessing as tmp

    module = sys.modules["torch.multiprocessing.spawn"]
    _session = session
    if _original is not None:
        return
    _original = module.start_processes
    _swap(module, _original, start_processes)
    _swap(tmp, _original, start_processes)


def uninstall() -> None:
    global _original, _session
    _session = None
    if _original is None:
        return
    import torch.multiprocessing as tmp

    _swap(sys.modules["torch.multiprocessing.spawn"], start_processes, _original)
    _swap(tmp, start_processes, _original)
    _original = None


def _swap(module: Any, old: Any, new: Any) -> None:
    """``module.start_processes = new`` where it is ``old`` (a script or library that put its
    own there keeps it)."""
    if getattr(module, "start_processes", None) is old:
        module.start_processes = new


def start_processes(fn: Any, args: tuple[Any, ...] = (), nprocs: int = 1, join: bool = True,
                    daemon: bool = False, start_method: str = "spawn") -> Any:
    """torch's ``start_processes``, with ``fn`` wrapped when its processes become ranks."""
    original = _original
    if original is None:  # uninstalled while a reference to this function was kept
        original = sys.modules["torch.multiprocessing.spawn"].start_processes
    session = _session
    target = _follow(session, fn, nprocs, start_method)
    try:
        result = original(target, args, nprocs, join, daemon, start_method)
    except BaseException as exc:
        if target is not fn and session is not None:
            _note_failure(session, exc)
        # the script's traceback goes on from torch's frames, as without dsprof
        if exc.__traceback__ is not None:
            exc.__traceback__ = exc.__traceback__.tb_next
        raise
    if target is not fn and session is not None:
        if not join:  # the script joins the context itself: decided when it says all ended
            take_back_when_joined(result, session, nprocs)
        elif trained_nothing(session.run, nprocs):
            take_back(session, nprocs)  # data preparation, not ranks: the training is here
    return result


def _follow(session: Any, fn: Any, nprocs: int, start_method: str) -> Any:
    """The function to start: ``fn`` wrapped, or ``fn`` itself with the reason logged."""
    if session is None or session.forked_child or os.getpid() != session.pid:
        return fn
    why = None
    if session.spawned is not None:
        why = "a second start_processes call in one run is not profiled (only the first is)"
    elif start_method == "fork":
        why = ("start_method='fork' is not followed (a forked copy of a profiled process "
               "cannot profile itself); use start_method='spawn' or `dsprof run "
               f"--nproc-per-node {nprocs}` with a torchrun-style script")
    elif nprocs < 1:
        return fn
    if why is None:
        try:
            hand_over(session, nprocs, start_method)
        except Exception as exc:  # the script must start its processes anyway
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            why = f"dsprof could not hand over to them: {type(exc).__name__}: {exc}"
    if why is not None:
        note = {"nprocs": nprocs, "start_method": start_method, "why": why}
        session.spawned_unprofiled.append(note)
        logger.warning("the script started %d processes through torch.multiprocessing; %s",
                       nprocs, why)
        return fn
    logger.info("the script starts %d ranks through torch.multiprocessing (%s): each is "
                "profiled as a rank of this run", nprocs, start_method)
    return SpawnedRank(fn, str(session.run.path), session.settings, session.target, nprocs)


def hand_over(session: Any, nprocs: int, start_method: str) -> None:
    """From here ``session``'s process only waits for the ranks it starts: its collectors
    stop, what they recorded of this process goes (``raw/rank0/`` is the rank 0 it starts),
    and the session coordinates (:func:`finish_coordinator` when the script ends)."""
    import shutil

    with session._finish_lock:  # not while the SIGTERM thread saves
        if session._finished or session.spawned is not None:
            raise RuntimeError("the session has ended or handed over already")
        session.stop_collectors(save=False)
        if session.progress is not None:
            session.progress.close()
            session.progress = None
        shutil.rmtree(session.raw, ignore_errors=True)
        session.run.update_meta(launcher=LAUNCHER, world_size=nprocs, ranks=[], devices={},
                                spawned={"nprocs": nprocs, "start_method": start_method})
        # last: a hand-over that failed midway leaves a session that saves itself at the end
        session.spawned = {"nprocs": nprocs, "start_method": start_method, "failures": {}}


def _note_failure(session: Any, exc: BaseException) -> None:
    """What torch's join saw: the rank that failed first and its exit code."""
    index = getattr(exc, "error_index", None)
    if session.spawned is None or not isinstance(index, int):
        return
    code = getattr(exc, "exit_code", None)  # ProcessExitedException; a raised exception: 1
    session.spawned["failures"][index] = int(code) if isinstance(code, int) else 1
    session.spawned.setdefault("first", index)


class SpawnedRank:
    """The script's function, run as a rank of this run in a process torch starts.

    Args:
        fn: the script's function, called as ``fn(i, *args)``.
        run_path: the run directory (absolute).
        settings: the knobs of ``dsprof run``.
        target: meta.json's ``target``.
        nprocs: how many processes torch starts (the world size of the ranks' sessions).
    """

    def __init__(self, fn: Any, run_path: str, settings: Any, target: dict[str, Any],
                 nprocs: int):
        self.fn, self.run_path, self.settings = fn, run_path, settings
        self.target, self.nprocs = target, nprocs

    def __call__(self, i: int, *args: Any) -> Any:
        from dsprof import terminate

        session = self._start(i)
        watcher = _watch_sigterm(session)
        try:
            result = self.fn(i, *args)
        except SystemExit as exc:
            if watcher is not None and terminate.signalled():
                # torch's join ends the ranks still running when one fails, with SIGTERM:
                # the rank saves what it has, then dies of the signal as it would have
                watcher.hold()
                _end(session, -signal.SIGTERM, "terminated", groups=False)
                terminate.die_of_sigterm()
            _end(session, _exit_status(exc.code), "exit", watcher=watcher)
            _drop_own_frame(exc)
            raise
        except KeyboardInterrupt as exc:
            # torch's SIGINT when the parent dies; multiprocessing's wrapper swallows it and
            # the process exits 0, which is what the rank's record says, with the reason
            _end(session, 0, "interrupt", watcher=watcher)
            _drop_own_frame(exc)
            raise
        except BaseException as exc:
            _end(session, 1, "exception", type(exc).__name__, watcher=watcher,
                 peer_lost=lost_a_peer(exc))
            _drop_own_frame(exc)
            raise
        _end(session, 0, "exit", watcher=watcher)
        return result

    def _start(self, i: int) -> Any:
        """This process's rank session; None when it cannot start (the rank runs unprofiled)."""
        from dsprof import log
        from dsprof.collectors.session import Session
        from dsprof.ranks import RankEnv, open_shared

        try:
            log.configure(quiet=True)  # the coordinator speaks for the job
            run = open_shared(Path(self.run_path))
            log.attach_file(run.raw_dir(i) / "dsprof.log")
            # launched: the process that started it coordinates (meta.json, the merge)
            session = Session(self.settings, run, self.target,
                              RankEnv(i, i, self.nprocs, launched=True))
            session.start()
            return session
        except Exception as exc:  # the rank's training must run regardless
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            logger.error("rank %d: %s (%s: %s); this rank is not profiled", i,
                         SESSION_NOT_STARTED, type(exc).__name__, exc)
            return None


def _watch_sigterm(session: Any) -> Any:
    """The rank's SIGTERM watcher (:mod:`dsprof.terminate`): a SIGTERM raises into the
    function, and a rank blocked outside Python is saved from the watcher thread after the
    grace period; either way the process then dies of SIGTERM, as without dsprof. None
    when the rank runs unprofiled or SIGTERM is not at its default."""
    if session is None:
        return None
    from dsprof.terminate import TermWatcher, grace_from_env

    # the record's status is the process's: killed by SIGTERM (-15), as its parent sees it
    watcher = TermWatcher(lambda: _end(session, -signal.SIGTERM, "terminated", groups=False),
                          grace_from_env(), by_signal=True)
    if not watcher.install():
        return None
    session.on_fork_child.append(watcher.forget_in_child)
    return watcher


def _end(session: Any, status: int, reason: str, error: str | None = None,
         groups: bool = True, watcher: Any = None, peer_lost: bool = False) -> None:
    """Save the rank's session; a failure here is one line, never the rank's own outcome.
    ``groups=False``: the process dies right after, so the gloo groups dsprof holds are left
    to it rather than released (which waits for their threads). ``watcher``: the rank's
    SIGTERM watcher, holding SIGTERM while the session saves and giving it back after."""
    if session is None or session.forked_child:  # a process the function forked came back
        return
    if watcher is not None:
        watcher.hold()
    from dsprof import log
    from dsprof.collectors import process_groups

    try:
        session.finish(status, reason, error, peer_lost)
        session.release()
        # the gloo groups dsprof held go now, once their threads are idle: the function's
        # own references to them went as it returned (process_groups.py says why)
        if groups:
            process_groups.release()
    except Exception as exc:
        if raised_in_signal_handler(exc):
            raise  # the script's own signal handler's: it is the script's
        logger.error("rank %d: could not save the dsprof session: %s: %s", session.rank,
                     type(exc).__name__, exc)
    log.detach_file()
    if watcher is not None:
        watcher.uninstall()  # the rank's own exit: SIGTERM does what it does without dsprof


def _exit_status(code: Any) -> int:
    """What ``multiprocessing`` exits with for ``SystemExit(code)`` (it prints a message)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    return 1


def _drop_own_frame(exc: BaseException) -> None:
    """The traceback torch sends to the parent starts at the script's function, as without
    dsprof (a bare ``raise`` adds no frame again)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is SpawnedRank.__call__.__code__:
        exc.__traceback__ = tb.tb_next


def finish_coordinator(session: Any, exit_status: int, reason: str, error: str | None) -> None:
    """The script ended in the process that started the ranks: wait for the ranks still
    saving (``join=False``), then merge their records into meta.json."""
    from dsprof.collectors.process_facts import frameworks_loaded
    from dsprof.ranks import log_rank_failures, merge_ranks, read_record, wait_for_ranks

    spawned = session.spawned
    nprocs = spawned["nprocs"]
    # the script ended by a signal: a SIGTERM'd coordinator saves with little time to spare
    # (its watcher thread ends it 5 s after the signal), and without dsprof it would be gone
    # now, its ranks interrupted by torch's parent-death SIGINT: they get it here, and save
    # (a Ctrl-C reached them from the terminal already)
    stopped = reason in ("terminated", "interrupt") or exit_status == 128 + signal.SIGTERM
    if stopped and reason != "interrupt":
        _interrupt_ranks(session.run, nprocs)
    waiting = wait_for_ranks(session.run, nprocs, 3.0 if stopped else RANK_WAIT_S)
    if waiting:
        logger.warning("ranks %s had not finished when the script ended; merged as they are",
                       waiting)
    failures = {int(r): c for r, c in spawned["failures"].items()}
    if failures:
        # torch's join ends the ranks still running when one fails with SIGTERM, which they
        # die of once saved ("terminated"), or unsaved where the signal came before their
        # session's watcher (their records stayed "running")
        for r in range(nprocs):
            rec = read_record(session.run, r)
            if r not in failures and rec is not None and (
                    rec.get("status") != "finished" or rec.get("exit_reason") == "terminated"):
                failures[r] = -signal.SIGTERM
    _warn_renumbered(session.run, nprocs)
    merged = merge_ranks(session.run, nprocs, failures, spawned.get("first"))
    # the ranks' imports and the parent's (the script that called spawn)
    ranks_imported = merged.pop("frameworks", None) or []
    loaded = frameworks_loaded()
    session.run.update_meta(
        **merged, status="finished", exit_status=exit_status, exit_reason=reason,
        exit_error=error, launcher=LAUNCHER,
        spawned={"nprocs": nprocs, "start_method": spawned["start_method"]},
        max_capture_s=session.settings.max_capture_s,
        max_capture_mb=session.settings.max_capture_mb,
        frameworks=loaded + [f for f in ranks_imported if f not in loaded])
    log_rank_failures(merged)


def _interrupt_ranks(run: Any, nprocs: int) -> None:
    """SIGINT to the ranks still running that this process started (what torch's
    ``PR_SET_PDEATHSIG`` sends them when it dies)."""
    import psutil

    from dsprof.ranks import read_record

    for r in range(nprocs):
        rec = read_record(run, r)
        pid = rec.get("pid") if rec is not None and rec.get("status") != "finished" else None
        if not isinstance(pid, int):
            continue
        try:
            if psutil.Process(pid).ppid() == os.getpid():
                os.kill(pid, signal.SIGINT)
        except (psutil.Error, OSError):
            continue


def _warn_renumbered(run: Any, nprocs: int) -> None:
    """A script whose process group numbers its processes otherwise than torch's index (a
    rank offset per node): the run's ranks are the indexes, and one line says so."""
    from dsprof.ranks import read_record

    for r in range(nprocs):
        rec = read_record(run, r) or {}
        if isinstance(rec.get("group_rank"), int):
            logger.warning("process %d of torch.multiprocessing is rank %d of its process "
                           "group; this run names each process by its index (raw/rank%d)", r,
                           rec["group_rank"], r)
