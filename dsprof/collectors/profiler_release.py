"""Ending a torch.profiler session of the timeline's: stopping it, writing its trace, and
freeing its results as soon as that trace is saved.

torch's ``profile`` object outlives its use: it sits in reference cycles, so what it holds is
freed only when the cyclic collector happens to reach it, which in a short run is at exit. For
a profiler that observes a training loop, holding its results changes the loop's heap (below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsprof.rundir import remove_quietly


def stop_session(prof: Any, started: bool) -> None:
    """Stop a session, ``started`` or only prepared (a warm-up).

    A prepared session that never started: Kineto's stop alone logs "disableProfiler called
    but no active profiling session found" to the script's stderr (a script that ends during
    the warm-up); torch.profiler's own schedule starts such a session, then stops it."""
    if not started:
        prof.start_trace()
    prof.stop_trace()


def save_trace(prof: Any, path: Path) -> None:
    """Write a stopped session's trace to ``path`` with Kineto's own writer, then free its
    results; on failure no partial trace is left that would read as a window."""
    try:
        prof.export_chrome_trace(str(path))  # Kineto writes <path>.tmp, then renames it
        if not path.is_file():  # Kineto gives up silently when a write fails
            raise OSError(f"could not write {path} (is the disk full, or a file size "
                          "limit reached?)")
    except BaseException:
        release_results(prof)
        for part in (path, path.with_name(f"{path.name}.tmp")):
            remove_quietly(part)
        raise
    release_results(prof)


def release_results(prof: Any) -> None:
    """Free a stopped session's Kineto results now, in the step that stopped it, and the
    session itself once dsprof drops it (:func:`_break_cycle`).

    Nothing else frees them before the run exits: the ``profile`` object is in reference
    cycles (its ``action_map`` holds its own bound methods, and ``prepare_trace``'s frame
    stays in a caught exception's traceback), and no collection reached it in a 30-step run.
    Kept, they held the heap's top above the window's freed event buffers (fusion_mlp: 14 MiB
    in use after its window, 6 more after the dropped step-0 capture), and the steps after
    the window took fresh pages for their tensors (the heap grew 27 MiB in the ``trace_write``
    step and 12 in the next; 4,200-9,700 faults in that next one, against a steady median of
    1,000-1,800): the first steady step ran 1.1-2.7x the median, and analyzers took it for
    the program's own. Freed here, they go in the ``trace_write`` step, which is disturbed already.
    """
    inner = getattr(prof, "profiler", None)
    if inner is not None:
        inner.kineto_results = None
        inner._function_events = None
        inner._old_function_events = None
    _break_cycle(prof)


def _break_cycle(prof: Any) -> None:
    """The ``profile`` object goes as soon as dsprof drops it, not at a collection: its
    ``action_map`` (its schedule's transitions) holds its own bound methods, a cycle. A script
    that ran with ``gc.disable()`` kept every window's session (with ``DSPROF_REPEAT=0``, RSS
    330 -> 351 MiB over 600 steps), and dsprof must not call ``gc.collect()`` itself: that
    runs the script's ``gc.callbacks`` at a point the script did not choose. dsprof steps its
    sessions by hand (prepare, start, stop), never through the schedule."""
    transitions = getattr(prof, "action_map", None)
    if isinstance(transitions, dict):
        transitions.clear()
