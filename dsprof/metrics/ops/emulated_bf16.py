"""What bf16 matmuls and convolutions cost on a CPU that emulates bf16, read from the run.

On a CPU with neither AVX512-BF16 nor AMX (meta.json ``precision.cpu_bf16`` is ``none``), a
bf16 matmul or convolution does not run oneDNN's bf16 kernels: PyTorch falls back to its
reference kernels (``_slow_conv2d_forward`` for a convolution, a scalar GEMM for ``mm``), which
convert each element. On one thread of a 2-core AMD EPYC (AVX2) they ran 1.4-2.9 GFLOP/s
against 27-84 for fp32: a 128x512 @ 512x512 matmul took 48 ms in bf16 and 0.78 ms in fp32, a
4x16x16x16 -> 32 3x3 convolution 0.90 ms against 0.11. The full-speed prices of
``autocast_cost.py`` were fitted on AMX and are 5-60x too low there, and no single GFLOP/s
fits the emulation (its rate moved 2x between shapes), so the run's own profile prices them.
fp16 on a CPU without AVX512-FP16 or AMX-FP16 (``precision.cpu_fp16`` is ``none``) is emulated
alike (52 ms for that matmul) and priced the same way.

A profiled op is slower than at full speed by an amount that is not known per op (the
convolution above took 0.94-0.98 ms in a profiled step against 0.90, the first one 0.45-0.48
against 0.37), so two readings bound it:

- the ops' profiled time per step, an upper bound: recording never makes an op faster;
- the same scaled by the full-speed step over the profiled step, the whole step's slowdown
  spread evenly over its ops. The profiler slows small ops most, by a share of their time,
  and the emulated ops are the step's large ones, so this is (nearly) a lower bound.

The estimate is their middle. Where the two readings differ by more than a quarter of it, the
price is too loose to rank (the analyzer says so); on a model whose emulated ops are most of
the step they agree. On that EPYC (docs/analyzers.md, CPU autocast): the corpus's
``bf16_autocast.py`` (batch 4, two small convolutions) read 3.12 and 1.72 ms a step, priced
autocast off at 2.05 ms (unranked) and measured 2.02 (``dsprof verify --rounds 3``, 95 %
interval 1.94-2.10); an MLP 512->512->512->10 at batch 128 read 74.1 and 71.0, priced 70.9
and measured 72.1 (two rounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsprof.facts import FULL_SPEED

AGREEMENT = 0.25
"""Largest half-spread of the two readings, as a share of their middle, for a ranked price."""


@dataclass(frozen=True)
class EmulatedBf16:
    """Seconds a step of the emulated bf16 ops: ``profiled_s`` (upper), ``scaled_s`` (by
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


def emulated_bf16_seconds(ctx: Any, ops: list[tuple[Any, ...]], n: int) -> EmulatedBf16:
    """The emulated bf16 ``ops`` (rows whose 8th field is ``dur_ns``), profiled over ``n``
    steps, as seconds a step. ``ctx`` is the analyzer's Context (its run's step facts)."""
    profiled = sum(int(g[7] or 0) for g in ops) / 1e9 / max(1, n)
    step = ctx.run.facts.step
    full = step.median_s if step.rule == FULL_SPEED else None
    row = ctx.run.sql("SELECT median(dur_ns) FROM steps WHERE profiled") if ctx.run.has(
        "steps") else [(None,)]
    prof_step = float(row[0][0]) / 1e9 if row and row[0][0] else None
    # a profiled step that came out faster than full speed (a loaded machine's full-speed
    # steps) says nothing of the profiler's share: the ops' own time stands
    factor = min(1.0, full / prof_step) if full and prof_step else 1.0
    return EmulatedBf16(profiled_s=profiled, scaled_s=profiled * factor,
                        full_speed_step_s=full, profiled_step_s=prof_step)
