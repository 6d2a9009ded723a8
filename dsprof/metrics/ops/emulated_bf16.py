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

The run's own profile prices them, by the two readings of ``profile_readings.py`` (the
ops' profiled time, and the same scaled by the full-speed step over the profiled step). On
that EPYC (docs/analyzers.md, CPU autocast): the corpus's ``bf16_autocast.py`` (batch 4, two
small convolutions) read 3.12 and 1.72 ms a step, priced autocast off at 2.05 ms (unranked)
and measured 2.02 (``dsprof verify --rounds 3``, 95 % interval 1.94-2.10); an MLP
512->512->512->10 at batch 128 read 74.1 and 71.0, priced 70.9 and measured 72.1 (two
rounds).
"""

from __future__ import annotations

from typing import Any

from dsprof.metrics.ops.profile_readings import ProfileReadings, profile_readings


def emulated_bf16_seconds(ctx: Any, ops: list[tuple[Any, ...]], n: int) -> ProfileReadings:
    """The emulated bf16 ``ops`` (rows whose 8th field is ``dur_ns``), profiled over ``n``
    steps, as seconds a step. ``ctx`` is the analyzer's Context (its run's step facts)."""
    return profile_readings(ctx, sum(int(g[7] or 0) for g in ops) / 1e9 / max(1, n))
