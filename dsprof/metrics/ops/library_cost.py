"""What a library op that replaces a hand-written chain still costs, on CPU.

The bandwidth model of :mod:`fusion_chains` prices a fused kernel at its bytes, which on a GPU
is right. On CPU a GELU is compute-bound: ``F.gelu(x, approximate="tanh")`` measured
1.73-1.78 ns an element forward and 4.1-4.3 forward+backward on one thread (torch 2.13, this
project's machine; shapes (2048, 256), (64, 1024), (512, 512)), 45-65 % of the hand-written
chain's own time, where the bandwidth model prices the fused kernel at ~0.1 ns (x in, y out).
The fusion analyzer takes this cost off its bytes-model saving (fusion_mlp's hand GELU: the
bytes model alone predicted 2.3-4.6x the thread CPU time the swap saved, benchmarks/advice.py).

Where the run itself calls the library op (``aten::gelu`` / ``aten::gelu_backward`` elsewhere
in the model), its measured time per element is used; otherwise the calibrated per-element
cost above, for one thread (more intra-op threads make the library op cheaper, so the saving
predicted is then a lower bound).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsprof.metrics.ops.opbytes import op_io

# Seconds per element on one thread (torch 2.13, CPU): forward, backward.
CALIBRATED_S_PER_ELEMENT = {
    "gelu_tanh": (1.75e-9, 2.45e-9),
    "gelu": (0.45e-9, 1.5e-9),
}
_ATEN = {"gelu_tanh": ("aten::gelu", "aten::gelu_backward"),
         "gelu": ("aten::gelu", "aten::gelu_backward")}


@dataclass(frozen=True)
class LibraryCost:
    """Seconds per element of a library op, forward and backward, and where that came from."""

    forward_s: float
    backward_s: float
    source: str  # "measured in this run" or "calibrated (one thread)"

    def seconds(self, numel: int, backward: bool) -> float:
        return numel * (self.forward_s + (self.backward_s if backward else 0.0))


def library_cost(run, library: str, profiler_cost_s: float,
                 steps_filter: str = "") -> LibraryCost | None:
    """The per-element cost of ``library`` on this CPU run: measured where the run calls it
    (each call's time less the profiler's per-op cost, over its elements), else calibrated;
    None for a library op with neither."""
    if library not in CALIBRATED_S_PER_ELEMENT:
        return None
    fwd_cal, bwd_cal = CALIBRATED_S_PER_ELEMENT[library]
    measured = []
    for name in _ATEN[library]:
        rows = run.sql(f"SELECT o.dur_ns, o.input_shapes, o.dtypes FROM ops o "
                       f"WHERE o.name = ? {steps_filter}", [name])
        secs, elems = 0.0, 0
        for dur, shapes, dtypes in rows:
            io = op_io(shapes, dtypes)
            if io is None or not io.inputs:
                continue
            n = 1
            for d in io.inputs[0][0]:
                n *= d
            secs += max(0.0, dur / 1e9 - profiler_cost_s)
            elems += n
        measured.append(secs / elems if elems else None)
    # the tanh and erf forms share aten::gelu: only a run that calls the same form counts,
    # which shapes cannot tell; the measurement is used when both directions were seen
    if measured[0] is not None and measured[1] is not None:
        return LibraryCost(measured[0], measured[1], "measured in this run")
    return LibraryCost(fwd_cal, bwd_cal, "calibrated (one thread)")
