"""A ``GradScaler.update()`` in the step record (collectors/grad_scaler.py tells it), for
:mod:`dsprof.collectors.steps`."""

from __future__ import annotations

from typing import Any

from dsprof.collectors.step_loops import training_after_forwards
from dsprof.log import logger


def scaler_updated(steps: Any, scale: float, skipped: bool) -> None:
    """Record the scale for its step. With optimizer-marked steps the update follows the
    boundary of the step it belongs to, unless the scaler skipped ``optimizer.step()``: then
    no hook fired, and the update marks the boundary itself. With ``dsprof.step()`` it belongs
    to the step in progress. ``steps`` is the StepCollector."""
    steps.forwards.stop()
    if steps.source == "manual":
        step = len(steps.boundaries_ns)
    else:
        if skipped and not steps._stepped_since_update:
            if steps.source == "forward":
                training_after_forwards(steps, len(steps.boundaries_ns), True)
            steps.source = "optimizer"
            steps._pending_backward = []
            steps.boundary("optimizer")
        step = len(steps.boundaries_ns) - 1
    steps._stepped_since_update = False
    if step >= 0:
        steps.scaler[step] = (scale, skipped)
        if skipped:
            logger.info("step %d: GradScaler skipped the optimizer step (inf/NaN "
                        "gradients); loss scale now %g", step, scale)
