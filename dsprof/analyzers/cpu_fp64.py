"""fp64 on a CPU run: what training in float64 costs a step, priced from the run's profile.

A model made fp64 by ``.double()``, by ``torch.set_default_dtype(torch.float64)`` or by a numpy
float64 array turned into a tensor (``torch.from_numpy`` keeps numpy's dtype) runs every op on
twice the bytes and half the SIMD lanes of fp32. On one thread of this project's AVX2 EPYC,
fp64 over fp32 took (``time.perf_counter``, least of 5):

- per op: GEMMs 2.0-3.2x; most element-wise ops, reductions and Adam's updates 1.7-2.7x;
  layer norm 1.2-1.3x; sqrt 4.3-4.5x, GELU 6.8-7.3x (erf has no double vector kernel);
  convolutions 2.1-10.2x (no oneDNN double kernel);
- per training step: an MLP 256->1024->1024->1 with Adam at batch 128 27.4 / 9.7 ms (2.8x:
  in that loop Adam's sqrt and div over 1M-element fp64 tensors took 11-14x their fp32
  time), a 2-layer transformer encoder (256 wide, AdamW) 388 / 166 ms (2.3x), a small convnet
  with SGD 56.0 / 29.0 ms (1.9x), a 64->256->1 MLP with SGD 1.13 / 0.66 ms (1.7x; 1.4x on two
  threads).

So the price takes the fp64 ops' own time (``self_ns``, in forward, backward and the
optimizer, of the profiled steps) by the two readings of ``metrics/ops/profile_readings.py``,
and halves it (``FP32_SPEEDUP``): fp32 moves half the bytes, the ratio most ops sit near
(the fp64 ops' profiled self time over the same ops' in fp32 was 1.97-2.53 over the four
models above). Priced against measured, each model under ``dsprof run`` in fp64, then the fix
pasted and ``dsprof diff`` of the two runs' median steps (2 threads):

| model | priced | fp64 -> fp32 median step | saved |
|---|---|---|---|
| the 2-layer transformer encoder, AdamW | 113 ms | 220.5 -> 107.1 ms | 113.4 ms |
| the small convnet, SGD | 15.9 | 33.3 -> 15.9 | 17.4 |
| Lightning ``precision="64-true"``, MLP 256-1024-1024-1, Adam | 11.4 | 29.3 -> 17.0 | 12.3 |
| ``set_default_dtype(torch.float64)``, MLP 128-512-512-1, GELU, SGD | 5.4 | 11.9 -> 4.39 | 7.5 |
| numpy float64 inputs, ``.double()``, MLP 256-1024-1024-1, Adam | 12.6 | 28.2 -> 10.2 | 18.0 |
| the 64->256->1 MLP, SGD | 0.38, unranked | 1.130 -> 0.908 | 0.22 |

The price is low where fp64's slow ops weigh (GELU, Adam's sqrt and its temporaries), high on
a model of tiny ops, where the profiler's share is large: there the readings disagree and the
finding is unranked, as it is under the CPU floor. No knob applies it: a model's dtype changed
under the script is a different program, so it is verified by running the changed script.

The finding is ``tensor_core.fp64`` (the same kind a GPU run gets, priced there from its
kernels), made by :mod:`dsprof.analyzers.tensor_cores` from the fp64 matmul/conv ops it finds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from dsprof.analyzers.cpu_lowp_model import readings_words, unranked_why
from dsprof.analyzers.registry import Context
from dsprof.findings import Evidence
from dsprof.metrics.ops.opbytes import dtypes_of
from dsprof.metrics.ops.profile_readings import ProfileReadings, profile_readings
from dsprof.units import fmt_bytes

FP32_SPEEDUP = 2.0
"""fp64 op time over fp32's that the price assumes: the ratio of their element sizes."""

_FLOATS = ("float", "double", "c10::Half", "c10::BFloat16")


class CpuFp64Price:
    """What the fp64 ops of a CPU run cost a step, and what fp32 would save."""

    def __init__(self, ctx: Context, n_steps: int):
        steps = ("AND step IN (SELECT s.step FROM steps s WHERE s.profiled AND s.rank = o.rank)"
                 if ctx.profiled_steps else "")
        self.n = len(ctx.profiled_steps) or max(1, n_steps)
        rows = ctx.run.sql(
            "SELECT rank, name, phase, dtypes, self_ns FROM ops o "
            "WHERE dtypes LIKE '%\"double\"%' AND phase IN ('forward', 'backward', 'optimizer') "
            f"{steps}")
        # an op whose first floating-point input is fp64 (not an fp32 op given a double
        # scalar tensor after its fp32 ones)
        self.ops = [r for r in rows if _first_float(r[3]) == "double"]
        by_name: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0, 0])
        for rank, name, phase, _, self_ns in self.ops:
            slot = by_name[(name, phase)]
            slot[0] += (self_ns or 0) / 1e9
            slot[1] += 1
            slot[2] = rank
        self.by_name = sorted(by_name.items(), key=lambda kv: -kv[1][0])
        self.readings: ProfileReadings = profile_readings(
            ctx, sum(t for t, _, _ in by_name.values()) / self.n)
        self.saving_s = self.readings.estimate_s * (1 - 1 / FP32_SPEEDUP)

    @property
    def saving_range(self) -> list[float]:
        """The saving by each reading: [scaled's, profiled's]."""
        return [r * (1 - 1 / FP32_SPEEDUP) for r in (self.readings.scaled_s,
                                                      self.readings.profiled_s)]

    def evidence(self, per_step: str, top: int = 4) -> list[Evidence]:
        ms = 1e3
        return [Evidence(text=(f"{name} fp64 in {phase}: {t / self.n * ms:.3f} ms {per_step} "
                               f"profiled ({calls / self.n:.3g} calls)"),
                         rank=int(rank), value=t / self.n)
                for (name, phase), (t, calls, rank) in self.by_name[:top]]

    def words(self, ctx: Context, params: int) -> str:
        """The price in words, for the finding's explanation."""
        w = ctx.words
        ms = 1e3
        step = ctx.run.facts.step.median_s
        low, high = self.saving_range
        memory = (f"the model's {fmt_bytes(params)} of fp64 parameters become "
                  f"{fmt_bytes(params // 2)} in fp32" if params else
                  "its parameters take half the memory in fp32")
        return (
            f"On this run's CPU {len(self.ops) / self.n:.3g} ops {w.per_step} ran in fp64: "
            f"{readings_words(self.readings, w.per_step)}. fp32 "
            f"moves half the bytes in twice the SIMD lanes: priced at {FP32_SPEEDUP:.0f}x "
            "faster (measured 1.2-10x per op and 1.4-2.8x per training step on an AVX2 EPYC, "
            "analyzers/cpu_fp64.py), it saves about "
            f"{self.saving_s * ms:.3g} ms {w.a_step}"
            + (f" ({low * ms:.3g}-{high * ms:.3g} by the two readings)"
               if f"{low * ms:.3g}" != f"{high * ms:.3g}" else "")
            + (f", so the step would go from {step * ms:.3f} to about "
               f"{(step - self.saving_s) * ms:.3f} ms" if step else "")
            + f". It also halves memory: {memory}; their gradients, the optimizer's state and "
            "the activations halve with them. Keep fp64 only where the numerics need it (a "
            "Cholesky, an ODE solver): then the loss curve in fp32 says so.")

    def unranked(self) -> tuple[str, str] | None:
        """(``impact_unknown`` reason, the sentence for the explanation), or None to rank."""
        return unranked_why(self.readings, self.saving_s, "fp64 ops")


def _first_float(dtypes: Any) -> str | None:
    return next((t for t in dtypes_of(dtypes) or [] if t in _FLOATS), None)


# matrix factorizations and solves (and their _ex forms): kept in fp64 on purpose where they run
_LINALG = (r"^aten::(_?linalg_(cholesky|solve_triangular|eigh?|svd|qr|lu|lu_factor|inv|solve|"
           r"ldl_factor|lstsq)|cholesky|cholesky_solve|cholesky_inverse|triangular_solve|"
           r"lu_factor|_linalg_(svd|eigh|solve_ex|det|slogdet))")


def factorizations_in_fp64(ctx: Context) -> list[str]:
    """The matrix factorizations and solves that ran in fp64 (``aten::linalg_cholesky_ex``,
    ...), most frequent first: a model that factors matrices (a Gaussian process, a solver)
    keeps fp64 there for its numerics, and the library may cast to fp64 itself (GPyTorch's
    Cholesky, ``gpytorch.settings.linalg_dtypes``, float64 by default, in an fp32 model: "train
    in fp32" there changed nothing, and an exact GP in fp64 on purpose got it ranked high)."""
    rows = ctx.run.sql(
        "SELECT name, count(*) AS n FROM ops WHERE dtypes LIKE '%\"double\"%' "
        "AND regexp_matches(name, ?) GROUP BY name ORDER BY n DESC, name",
        [_LINALG]) if ctx.nonempty("ops") else []
    return [str(name) for name, _ in rows]

