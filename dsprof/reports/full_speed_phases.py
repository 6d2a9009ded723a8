"""Where a full-speed step's time went: backward, the optimizer, the data wait and the rest,
timed in every step of a ``dsprof run`` on a CPU (``steps.backward_ns``, ``optimizer_ns``,
``data_wait_ns``), over the steps that count (``run.facts``).

The time by phase of the profiled steps is the profiler's picture, and profiling slows some
phases far more than others: dsprof's module annotations and the profiler's per-op records
land on forward's many small module calls. A 100-block MLP (a Linear, a LayerNorm and a GELU a
block) ran forward 3.9 ms and backward 5.4 ms a step plainly; its profiled steps took 47 ms
and read "forward 58 %, backward 17 %" (forward 26.5 ms, backward 11.9 ms). This split is of
the script's own steps: the wall time inside ``backward()``/``torch.autograd.grad`` and
``optimizer.step()``, the DataLoader's wait, and the rest ("forward and the rest": the forward,
the loss, the script's own work between).

CPU runs only: on a GPU those calls return when their kernels are queued, so their wall time
is the host's, not the device's.
"""

from __future__ import annotations

from dsprof.facts import FULL_SPEED
from dsprof.metrics.noise import has_column
from dsprof.reports.summary_data import PhaseTime
from dsprof.run import Run

MIN_SHARE = 0.5  # of the counted steps that must have their phases timed


def full_speed_phases(run: Run) -> tuple[list[PhaseTime], int]:
    """``(phases, steps)``: each phase's mean ms a step and share of the step over the counted
    steps whose phases were timed; ``([], 0)`` where they were not (imports, GPU runs, runs
    recorded before the columns, runs too short for a full-speed step)."""
    step = run.facts.step
    counted = {(int(r), int(s)) for r, s, _ in step.counted}
    # (a run too short for a full-speed step says so, and has no split of one)
    if not counted or step.rule != FULL_SPEED or not run.manifest.is_run or _on_gpu(run) or not all(
            has_column(run, "steps", c) for c in ("backward_ns", "optimizer_ns")):
        return [], 0
    rows = [r for r in run.sql(
        """SELECT rank, step, dur_ns, backward_ns, optimizer_ns, coalesce(data_wait_ns, 0)
           FROM steps WHERE backward_ns IS NOT NULL AND optimizer_ns IS NOT NULL
             AND dur_ns > 0""") if (int(r[0]), int(r[1])) in counted]
    if not rows or len(rows) < MIN_SHARE * len(counted):
        return [], 0
    n = len(rows)
    total = sum(int(r[2]) for r in rows)
    # each phase at most the step (a run directory is data)
    parts = {"backward": sum(min(int(r[3]), int(r[2])) for r in rows),
             "optimizer": sum(min(int(r[4]), int(r[2])) for r in rows),
             "data": sum(min(int(r[5]), int(r[2])) for r in rows)}
    rest = max(total - sum(parts.values()), 0)
    out = [PhaseTime("forward and the rest", rest / n / 1e6, 100.0 * rest / total)]
    out += [PhaseTime(name, ns / n / 1e6, 100.0 * ns / total)
            for name, ns in parts.items() if ns]
    return out, n


def _on_gpu(run: Run) -> bool:
    return any(d.accelerator for d in run.manifest.devices)
