"""What a set of profiled CPU ops costs a step at full speed, read from the run: two readings.

Where no shape price fits (emulated bf16 matmuls, ``emulated_bf16.py``; fp64 ops,
``analyzers/cpu_fp64.py``), the run's own profile prices the ops. A profiled op is slower than
at full speed by an amount that is not known per op (a bf16 convolution took 0.94-0.98 ms in a
profiled step against 0.90, the first one 0.45-0.48 against 0.37), so two readings bound it:

- the ops' profiled time per step, an upper bound: recording never makes an op faster;
- the same scaled by the full-speed step over the profiled step, the whole step's slowdown
  spread evenly over its ops. The profiler slows small ops most, by a share of their time,
  and the priced ops are usually the step's large ones, so this is (nearly) a lower bound.

The estimate is their middle. Where the two readings differ by more than a quarter of it, the
price is too loose to rank (the analyzers say so); on a model whose priced ops are most of
the step they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsprof.facts import FULL_SPEED

AGREEMENT = 0.25
"""Largest half-spread of the two readings, as a share of their middle, for a ranked price."""


@dataclass(frozen=True)
class ProfileReadings:
    """Seconds a step of the priced ops: ``profiled_s`` (upper), ``scaled_s`` (by
    ``full_speed_step_s`` / ``profiled_step_s``), ``estimate_s`` their middle."""

    profiled_s: float
    scaled_s: float
    full_speed_step_s: float | None
    profiled_step_s: float | None

    @property
    def estimate_s(self) -> float:
        return (self.profiled_s + self.scaled_s) / 2

    def saving_range(self, saving: float) -> list[float]:
        """``saving`` (priced from the middle) by each reading: [scaled's, profiled's]."""
        half = (self.profiled_s - self.scaled_s) / 2
        return [saving - half, saving + half]

    @property
    def agree(self) -> bool:
        """Whether the two readings pin the price down (within ``AGREEMENT`` of it)."""
        return (self.profiled_s - self.scaled_s) / 2 <= AGREEMENT * self.estimate_s


def profile_readings(ctx: Any, profiled_s: float) -> ProfileReadings:
    """The readings of ops that took ``profiled_s`` a profiled step. ``ctx`` is the analyzer's
    Context (its run's step facts and steps table)."""
    step = ctx.run.facts.step
    full = step.median_s if step.rule == FULL_SPEED else None
    row = ctx.run.sql("SELECT median(dur_ns) FROM steps WHERE profiled") if ctx.run.has(
        "steps") else [(None,)]
    prof_step = float(row[0][0]) / 1e9 if row and row[0][0] else None
    # a profiled step that came out faster than full speed (a loaded machine's full-speed
    # steps) says nothing of the profiler's share: the ops' own time stands
    factor = min(1.0, full / prof_step) if full and prof_step else 1.0
    return ProfileReadings(profiled_s=profiled_s, scaled_s=profiled_s * factor,
                           full_speed_step_s=full, profiled_step_s=prof_step)
