"""What fusing a per-parameter optimizer loop saves on CPU (analyzers/fusion_optimizer.py): both
sides priced from what the update touches at a quiet machine's prices
(metrics/ops/optimizer_cost.py), plus what the run itself shows the loop pays beyond them (its
page faults, its sqrt on zeros), taken at the run's own pace, and the words that say so."""

from __future__ import annotations

from dataclasses import dataclass

from dsprof.analyzers.step_words import StepWords
from dsprof.metrics.ops.optimizer_cost import (
    CPU_CALIBRATED,
    FUSED_CPU_S_PER_PARAM_BYTE,
    FUSED_CPU_S_PER_TENSOR,
    LOOP_CPU_S_PER_OP,
    LOOP_CPU_S_PER_PARAM_BYTE,
    MIN_PRICED_CPU_S,
    PACE_MIN_LOOP_S,
    PAGE_FAULT_S,
    SQRT_EXCESS_MIN_S,
    STEP_CALL_CPU_S,
    fused_cpu_s,
    loop_cpu_s,
    pace,
)


@dataclass(frozen=True)
class CpuUpdatePrice:
    """The loop's and the fused kernel's CPU time a step, the saving, whether the loop was
    priced (thread CPU time) rather than capped at its recorded extent (op time), the pace the
    prices were taken at (None: the quiet prices), the explanation, and why the impact is
    unknown (None: ranked on the saving)."""

    loop_s: float
    fused_s: float
    saving_s: float
    priced_loop: bool
    pace: float | None
    text: str
    unknown: str | None
    sqrt_s: float = 0.0
    """The sqrt excess priced: what the profiled ops read, at most what the unprofiled
    step() calls leave (:func:`sqrt_room`)."""


def fault_cost_s(faults: float | None) -> float:
    """What the loop's mean page faults a step cost; under one a step on average (the first
    step's state allocation spread over the run) is no recurring cost."""
    return faults * PAGE_FAULT_S if faults is not None and faults >= 1 else 0.0


def loop_pace(n_ops: float, pbytes: int, n_optimizers: int, faults: float | None,
              sqrt_s: float, unprofiled: float) -> float | None:
    """The pace (optimizer_cost.pace) of a loop of ``n_ops`` ops over ``pbytes`` whose
    unprofiled step() calls took ``unprofiled`` a step: its page faults (counted) and sqrt
    excess (read from the run) taken out first, since they are not priced at the quiet rate.
    None for a loop priced under PACE_MIN_LOOP_S: the call around it, not the ops, would set it."""
    if loop_cpu_s(n_ops, pbytes) < PACE_MIN_LOOP_S:
        return None
    return pace(unprofiled - fault_cost_s(faults) - sqrt_s, loop_cpu_s(n_ops, pbytes),
                n_optimizers)


def sqrt_room(n_ops: float, pbytes: int, n_optimizers: int, faults: float | None,
              unprofiled: float) -> float:
    """The most sqrt excess the run can show: what its unprofiled step() calls took a step
    beyond the loop's quiet price, the calls around it and its page faults. The excess read
    from profiled ops can be more when the profiler or the machine's load stretched those
    sqrt ops (makemore's AdamW on a loaded machine: 3.82 ms of "excess" read, against 2.06 ms
    for the whole unprofiled step(), its exp_avg_sq with no zero in it)."""
    return max(0.0, unprofiled - fault_cost_s(faults) - loop_cpu_s(n_ops, pbytes)
               - n_optimizers * STEP_CALL_CPU_S)


def price_cpu_update(cls: str, n_ops: float, pbytes: int, n_tensors: int, n_optimizers: int,
                     *, faults: float | None, sqrt_s: float, unprofiled: float | None,
                     recorded: float, foreach: bool, lightning: bool,
                     words: StepWords) -> CpuUpdatePrice:
    """The per-parameter loop of ``cls`` (``n_ops`` ops a step over ``pbytes`` in
    ``n_tensors`` parameters, ``n_optimizers`` step() calls) and its fused kernel, priced on
    CPU: the quiet machine's prices plus the loop's page ``faults`` and ``sqrt_s`` excess,
    taken at the pace of the ``unprofiled`` update (``optimizer_cost.pace``), the loop at most
    its ``recorded`` extent; with the text that says how."""
    fault_s = fault_cost_s(faults)
    read_sqrt_s = sqrt_s
    if unprofiled is not None and cls in CPU_CALIBRATED:
        sqrt_s = min(sqrt_s, sqrt_room(n_ops, pbytes, n_optimizers, faults, unprofiled))
    loop = loop_cpu_s(n_ops, pbytes) + fault_s + sqrt_s
    predicted = fused_cpu_s(n_tensors, pbytes)
    # the priced parts at this run's pace (optimizer_cost.pace): the prices are a
    # quiet machine's, and the thread's CPU time moves with the load; the faults
    # (counted) and the sqrt's excess (read from this run's ops) stay as they are
    read = (loop_pace(n_ops, pbytes, n_optimizers, faults, sqrt_s, unprofiled)
            if unprofiled is not None and cls in CPU_CALIBRATED else None)
    paced = read is not None
    speed = read or 1.0
    unprofiled = unprofiled or 0.0
    quiet_loop, quiet_fused = loop, predicted
    if paced:
        loop = loop_cpu_s(n_ops, pbytes) * speed + fault_s + sqrt_s
        predicted *= speed
    priced_loop = loop <= recorded
    saving = min(recorded, loop) - predicted
    paged = (f" plus its {faults:.0f} page faults {words.per_step} at "
             f"{PAGE_FAULT_S * 1e6:.1f} us each (the loop's temporaries, which "
             "malloc gives back to the kernel and takes again every step; the "
             "fused kernel allocates none)" if fault_s else "")
    held = (f" (its profiled sqrt ops read {read_sqrt_s * 1e3:.3f} ms, held to what its "
            "step() calls outside the profiler left: the rest was the profiler's or the "
            "machine's load)" if sqrt_s < read_sqrt_s else "")
    paged += (f" plus {sqrt_s * 1e3:.3f} ms {words.per_step} that its sqrt ops "
              f"took beyond a sqrt of the same size without zeros{held} (exp_avg_sq is "
              "zero where gradients were: torch's CPU sqrt takes ~11 ns a zero "
              "against ~0.2 ns a value; the fused kernel does not slow down)"
              if sqrt_s >= SQRT_EXCESS_MIN_S else "")
    body = (
        f" On CPU the update is priced from what it touches, not from its profiled "
        f"time (profiling inflates the loop by 4-97 %, unevenly): on a quiet "
        f"machine the loop at {LOOP_CPU_S_PER_OP * 1e6:.2f} us an op and "
        f"{LOOP_CPU_S_PER_PARAM_BYTE * 1e9:.2f} ns a parameter byte{paged} = "
        f"{quiet_loop * 1e3:.3f} ms, the fused kernel at "
        f"{FUSED_CPU_S_PER_TENSOR * 1e6:.1f} us a tensor ({n_tensors} here) and "
        f"{FUSED_CPU_S_PER_PARAM_BYTE * 1e9:.2f} ns a parameter byte "
        f"({pbytes / 2**20:.2f} MiB) = {quiet_fused * 1e3:.3f} ms.")
    if paced:
        body += (f" At this run's pace: outside the profiler its {cls}.step() took "
                 f"{unprofiled * 1e3:.3f} ms of CPU {words.per_step}: its priced ops and "
                 f"the {STEP_CALL_CPU_S * 1e6:.0f} us around each call ran "
                 f"{speed:.2f}x their price, so the loop is {loop * 1e3:.3f} ms and the fused kernel "
                 f"{predicted * 1e3:.3f} ms here.")
    if not priced_loop:
        body += (f" The loop is taken at its recorded extent, "
                 f"{recorded * 1e3:.3f} ms, which is less.")
    unknown = None
    if cls not in CPU_CALIBRATED:
        unknown = f"fused {cls} uncalibrated on CPU"
        body += (f" Impact unknown; verify to measure: those costs were measured "
                 f"for {'/'.join(sorted(CPU_CALIBRATED))} only, and {cls}'s fused "
                 "kernel may keep more of the loop.")
    elif foreach:
        unknown = "foreach to fused uncalibrated on CPU"
        body += (" Impact unknown; verify to measure: those costs were measured "
                 "against the per-parameter loop, not foreach.")
    elif lightning:
        unknown = "Lightning's step on CPU"
        body += (" Impact unknown; verify to measure: under Lightning's Trainer "
                 "the step changes by more than the update (lightning_trainer: "
                 "0.13 ms priced, 0.12-0.14 ms saved by the same network's update "
                 "in a plain loop, 0.17-0.21 ms a step under the Trainer).")
    elif saving < MIN_PRICED_CPU_S:
        unknown = "small update on CPU"
        body += (f" Impact unknown; verify to measure: a CPU saving priced under "
                 f"{MIN_PRICED_CPU_S * 1e3:.2f} ms is not ranked, since verify "
                 "measured such savings up to 0.08 ms away from their price and "
                 "between sittings (hand_attention: 0.21 ms priced, 0.22-0.31 ms "
                 "measured), over 25 % of them (metrics/noise_floor.py).")
    return CpuUpdatePrice(loop_s=loop, fused_s=predicted, saving_s=saving,
                          priced_loop=priced_loop, pace=speed if paced else None,
                          text=body, unknown=unknown, sqrt_s=sqrt_s)
