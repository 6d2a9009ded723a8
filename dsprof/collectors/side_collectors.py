"""The optional collectors a session starts beside its core ones (steps, timeline, memory):
the guard that steps the timeline aside for the script's own torch.profiler, CUPTI's whole-run
kernel records, and the DEBUG op trace / NaN-Inf check. Each start is fenced: a collector that
cannot start is logged and left out, never failing the script."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsprof.collectors.cupti_kernels import CuptiKernelCollector
from dsprof.collectors.timeline import TimelineCollector
from dsprof.collectors.user_profiler import UserProfilerGuard
from dsprof.frames import raised_in_signal_handler
from dsprof.log import logger
from dsprof.settings import Settings


def watch_user_profiler(timeline: TimelineCollector,
                        timeline_ok: Callable[[], bool]) -> UserProfilerGuard | None:
    """The script's own torch.profiler sessions: the timeline steps aside for them."""

    def started() -> None:
        if timeline_ok():
            timeline.step_aside()

    guard = UserProfilerGuard(started, timeline.resume)
    try:
        guard.install()
    except Exception as exc:  # a collector must not fail the script
        if raised_in_signal_handler(exc):
            raise  # the script's own signal handler's: it is the script's
        logger.error("cannot watch for the script's own torch.profiler: %s: %s",
                     type(exc).__name__, exc)
        return None
    return guard


def start_cupti(device: Any, raw: Path, now_ns: Callable[[], int],
                timeline: TimelineCollector | None) -> CuptiKernelCollector | None:
    """Whole-run kernel records, handed over to the profiler around every window (the
    bootstrap capture holds CUPTI first; the mode starts recording when it ends)."""
    try:
        cupti = CuptiKernelCollector.open(device, raw, now_ns)
    except Exception as exc:  # a collector must not fail the script
        if raised_in_signal_handler(exc):
            raise  # the script's own signal handler's: it is the script's
        logger.error("cupti kernel mode failed to start: %s: %s", type(exc).__name__, exc)
        return None
    if cupti is not None and timeline is not None:
        timeline.before_profiler = cupti.pause
        timeline.after_profiler = cupti.resume
    return cupti


def start_watcher(settings: Settings, raw: Path, rank: int, now_ns: Callable[[], int]) -> Any:
    """The live op trace (DEBUG) and NaN/Inf check (--detect-anomaly, and DEBUG); None when
    neither is asked for."""
    trace = logger.isEnabledFor(logging.DEBUG)
    if not (trace or settings.detect_anomaly):
        return None
    from dsprof.collectors.dispatch_watch import DispatchWatcher
    from dsprof.collectors.trace_filter import TraceFilter

    watcher = DispatchWatcher(
        trace=trace, check=True, trace_filter=TraceFilter.parse(settings.trace_filter),
        alloc_bytes=settings.trace_alloc_bytes, raw_dir=raw, rank=rank, now_ns=now_ns)
    watcher.start()
    return watcher
