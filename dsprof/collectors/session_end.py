"""A session's end: its collectors stopped, and what they recorded written to the run.

Split from :mod:`dsprof.collectors.session` (the session's start and its step routing stay
there). Every write is one file of the run; a failure (full disk, size limit, read-only) is one
line, and the files written before it are kept.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import orjson

from dsprof.collectors import (
    child_processes,
    memory_history,
    peak_ledger,
    process_groups,
    python_children,
)
from dsprof.collectors.compile_watch import compile_meta
from dsprof.collectors.device import precision_state
from dsprof.collectors.late_environment import set_too_late
from dsprof.collectors.process_facts import frameworks_loaded
from dsprof.hidden_threads import on_main_thread
from dsprof.late_variables import describe
from dsprof.log import logger
from dsprof.rundir import SESSION_FILE, atomic_write_bytes


def stop_collectors(session: Any, save: bool) -> None:
    """Every collector off; with ``save``, what they hold is written to raw/ (without, at
    a hand-over to spawned ranks, dsprof.collectors.spawned_ranks.hand_over)."""
    steps, timeline = session.steps, session.timeline
    if session.clock is not None:
        session.clock.finish()  # the record below says what it measured
    if session.watcher is not None:
        session.watcher.stop()
    if session.user_profiler is not None:
        session.user_profiler.uninstall()
    if session.scaler is not None:
        session.scaler.uninstall()
    if steps is not None:
        steps.uninstall()
    peak_ledger.uninstall()
    memory_history.uninstall()
    if session.compile is not None:
        session.compile.uninstall()
    if session.knobs is not None:
        session.knobs.uninstall()
    for hooks in (session.data, session.syncs):
        if hooks is not None:
            hooks.uninstall()
    if timeline is not None and session._timeline_ok and \
            not on_main_thread():
        # the SIGTERM thread saves while the main thread is blocked: Kineto's session
        # belongs to the main thread, and stopping it from here crashes torch
        session._timeline_ok = False
        logger.warning("the profiler window open at SIGTERM is not saved (the main thread "
                       "is blocked); every step's timing is")
    if timeline is not None and session._timeline_ok and not save:
        timeline.discard()
    elif timeline is not None and session._timeline_ok:
        try:
            sources = steps.sources if steps is not None else []
            timeline.finish(_leading(sources, "backward"), _leading(sources, "forward"))
        except Exception as exc:  # noqa: BLE001
            session._disable_timeline(exc)
    if session.memory is not None and save:
        session.memory.finish()
    if session.cupti is not None:
        try:
            session.cupti.finish()
        except Exception as exc:  # noqa: BLE001
            logger.error("cupti kernel mode failed: %s: %s", type(exc).__name__, exc)
    if session.sampler is not None:
        try:
            session.sampler.stop()
        except Exception as exc:  # noqa: BLE001
            logger.error("metric sampler failed: %s: %s", type(exc).__name__, exc)


def save(session: Any, exit_status: int, reason: str, error: str | None,
         peer_lost: bool = False) -> None:
    """Every collector off, what they hold written to raw/, then ``session.json`` and (a
    single-process run) ``meta.json`` with the exit status."""
    stop_collectors(session, save=True)
    _settle_device(session)
    steps, timeline = session.steps, session.timeline
    windows = [w.to_json() for w in timeline.windows] if timeline else []
    record = {**(steps.record() if steps else {}), "windows": windows,
              "end_ns": steps.now_ns() if steps else None, "rank": session.rank,
              "dataloaders": session.data.rows() if session.data else [],
              "host_syncs": session.syncs.rows() if session.syncs else [],
              "compile": session.compile.record() if session.compile else None}
    if session.ranks.distributed:
        record = {**session.rank_facts("finished"), **record, "exit_status": exit_status,
                  "exit_reason": reason, "exit_error": error,
                  # what the rank's script imported: the merge's meta.json frameworks (a
                  # torchrun job's Lightning Trainer was told ddp_model.register_comm_hook)
                  "frameworks": frameworks_loaded(),
                  # a failure that followed another rank's death (dsprof.ranks.merge_ranks)
                  **({"exit_peer_lost": True} if peer_lost else {})}
    late = _set_too_late(session)
    _save(session.raw / SESSION_FILE, lambda p: atomic_write_bytes(p, orjson.dumps(record)))
    if session.ranks.distributed:
        logger.debug("session: rank %d finished (%s, status %d)", session.rank, reason,
                     exit_status)
        return
    _save(session.run.meta_path, lambda _p: session.run.update_meta(
        status="finished",
        exit_status=exit_status,
        exit_reason=reason,
        exit_error=error,
        end_time=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        end_ns=record["end_ns"],
        steps_source=record.get("source", "none"),
        steps_recorded=len(record.get("boundaries_ns", [])),
        backward_calls=record.get("backward_calls"),
        grad_calls=record.get("grad_calls"),
        loop_starts=record.get("loop_starts") or [],
        forward_calls=record.get("forward_calls"),
        forward_modules=record.get("forward_modules"),
        closure_steps=record.get("closure_steps"),
        compile=compile_meta(record.get("compile")),
        windows=windows,
        capped=any(w["capped"] for w in windows),
        capped_by=next((w.get("capped_by") for w in windows if w["capped"]), None),
        max_capture_s=session.settings.max_capture_s,
        max_capture_mb=session.settings.max_capture_mb,
        knobs=session.knobs.report() if session.knobs is not None else {},
        precision=precision_state(),
        frameworks=frameworks_loaded(),
        **({"spawned_unprofiled": session.spawned_unprofiled} if session.spawned_unprofiled
           else {}),
        # a process group wider than the run: ranks the script started itself (Lightning's
        # strategy="ddp" runs `python script.py` again per rank), which dsprof never saw
        **({"group_unprofiled": {"world_size": seen[0], "rank": seen[1]}}
           if not session.ranks.distributed and (seen := process_groups.default_group_seen())
           and seen[0] > 1 else {}),
        **({"child_processes": child_processes.to_meta(session.child_processes)}
           if session.child_processes else {}),
        **python_children.take_meta(),
        **({"user_profiler": handed_over}
           if timeline and (handed_over := timeline.handed_over.to_meta()) else {}),
        **({"autograd_anomaly": sum(record["autograd_anomaly"])}
           if any(record.get("autograd_anomaly") or ()) else {}),
        **({"late_environment": late} if late else {}),
        **({"devices": {str(session.rank): session.device.to_json()}} if session.device
           else {}),
        **({"cuda_driver_at_start": session.driver_at_start}
           if session.driver_at_start is not None else {}),
    ))
    logger.debug("session: finished (%s, status %d), %d windows", reason, exit_status,
                 len(windows))


def _settle_device(session: Any) -> None:
    """The device's facts for the record: read from torch where the script initialised CUDA
    and no step boundary came after (collectors/device.py), else the CPU the script ran on."""
    device = session.device
    if device is None or device.settled:
        return
    try:
        if not device.settle():
            device.settle_on_cpu()
            logger.info("the script never initialised CUDA: this run is recorded as a CPU run")
    except Exception as exc:  # noqa: BLE001 - a fact must never cost the run its save
        logger.warning("could not read the device's facts: %s: %s", type(exc).__name__, exc)


def _set_too_late(session: Any) -> list[dict[str, Any]]:
    """What the script set in os.environ after it was read (collectors/late_environment.py),
    each said on stderr too (every rank's, where ranks keep no meta of their own)."""
    if not session.environment_at_load:
        return []
    try:  # a note: it must never cost the run its save
        # the script's own CUDA read its settings where dsprof's start left the driver alone
        late = set_too_late(session.environment_at_load,
                            bool(session.device and session.device.is_accelerator
                                 and session.driver_at_start is not False))
    except Exception as e:  # noqa: BLE001 - e.g. torch's state at a crash
        logger.debug("late environment not checked: %s: %s", type(e).__name__, e)
        return []
    for item in late:
        logger.warning("%s", describe(item))
    return late


def _save(path: Path, write: Any) -> bool:
    """Write one file of the run; a failure (full disk, size limit, read-only) is one line."""
    try:
        write(path)
        return True
    except OSError as exc:
        logger.error("could not write %s: %s; the files written before it are kept", path,
                     exc.strerror or exc)
        return False


def _leading(items: list[str], value: str) -> int:
    """How many of ``items`` from the start equal ``value``."""
    n = 0
    for item in items:
        if item != value:
            break
        n += 1
    return n
