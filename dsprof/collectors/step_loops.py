"""Loops one after another in a run (:mod:`dsprof.collectors.steps`' docstring): where each
loop after the first starts, and the boundaries another optimizer's loop left to be found
after the fact. ``steps`` is the StepCollector."""

from __future__ import annotations

from typing import Any

from dsprof.log import logger


def late_loop(steps: Any, late: list[tuple[int, int]], live: bool | None,
              what: str = "a new optimizer") -> int:
    """Boundaries found after the fact; a loop from the first where the leader says so."""
    first = len(steps.boundaries_ns)
    for end_ns, cpu in late:
        steps._record_boundary("optimizer", end_ns, cpu, sample=False)
    if live is not None and steps.leader.new_loop:
        new_loop(steps, first, live, what)
        if steps.leader.resumed:  # the leader back after another optimizer's loop
            new_loop(steps, len(steps.boundaries_ns), live, "the optimizer that led before")
    return len(steps.boundaries_ns) - 1


def training_after_forwards(steps: Any, first: int, live: bool) -> None:
    """Training takes over from forward steps: its loop starts at the step its first
    iteration's forward ended (ForwardWatch.training_forwards)."""
    floor = (steps.loop_starts[-1] if steps.loop_starts else 0) + 1
    new_loop(steps, max(floor, first - steps.forwards.training_forwards()), live,
             "training after forward calls")


def new_loop(steps: Any, first: int, live: bool, what: str) -> None:
    """A loop after another starts at step ``first`` (the boundary about to be announced
    is the schedule's origin)."""
    steps.loop_starts.append(first)
    logger.info("a new loop starts at step %d (%s): it gets profiler windows of its own",
                first, what)
    if live and steps.on_new_loop is not None:
        steps.on_new_loop(first, len(steps.boundaries_ns))
