"""What an optimizer's update costs on CPU, as the per-parameter loop and as torch's fused
kernel: the prices ``fusion_optimizer`` predicts a CPU run's saving with, and their
calibration (``benchmarks/fused_optimizer_cpu.py``)."""

from __future__ import annotations

from dsprof.metrics.noise_floor import MIN_PRICED_CPU_S

__all__ = ["MIN_PRICED_CPU_S", "fused_cpu_s", "loop_cpu_s", "pace", "step_sqrt_excess_s",
           "zero_free_sqrt_s"]

# The update on CPU, loop and fused, priced from what it touches (torch 2.13, one thread, this
# project's machine; benchmarks/fused_optimizer_cpu.py: 12 corpus scripts with Adam/AdamW, the
# per-parameter loop and the fused kernel in alternating steps of the same training, thread
# CPU time of ``optimizer.step``). Least squares, each script within 10 %, two runs on a quiet
# machine (load average 0.5-0.7, 4 Dec 11:06): the loop costs 2.04-2.07 us an op (dispatch and
# the Python between ops) and 0.58-0.63 ns a parameter byte (its 9-10 passes over state that
# forward and backward left cache-cold), the fused kernel 2.63-2.67 us a tensor (its per-tensor
# set-up) and 0.26-0.27 ns a parameter byte; the 66-74 us of ``step()`` around either is about
# the same and cancels. An earlier fit that pooled runs under load 3-11 gave 2.56 us, 0.86 ns,
# 3.74 us and 0.37 ns: thread CPU time itself grows with the load (a busy sibling core), and
# those prices over-predicted the verify-measured savings of a quiet machine by 13-27 % (vit,
# gan, hf_gpt2, hf_t5: benchmarks/advice.py, load 0.35-1.0). Priced savings are a quiet
# machine's; on a loaded one the measured saving grows with the thread's slowdown.
# The loop's own profiled time cannot be the "now": profiling inflated the loop's extent by
# 4-97 % over its plain-script time (compiled 0.43 ms profiled, 0.22 plain; unet 1.16 and
# 1.11), and by up to 27 % between two runs of one script (vit 1.43 and 1.81 ms), while the
# saving is ~0.7 of the plain loop. It is still an upper bound on the loop: on a machine
# where the loop runs faster than priced, the saving is the profiled loop less the fused cost.
LOOP_CPU_S_PER_OP = 2.06e-6
LOOP_CPU_S_PER_PARAM_BYTE = 0.60e-9
FUSED_CPU_S_PER_TENSOR = 2.65e-6
FUSED_CPU_S_PER_PARAM_BYTE = 0.26e-9
# What a minor page fault costs the thread that takes it: the kernel maps and zeroes a 4 KiB
# page. 0.91-0.93 us (an mmap'd MiB written once, against the same fill of a mapped MiB;
# /tmp measurement on this machine, load 4, 4 Dec). The per-parameter loop takes them when
# malloc returns its temporaries to the kernel every step: examples/periodic_eval.py's
# Linear(256, 1024) Adam loop faulted 448-480 pages a step inside optimizer.step(), the fused
# kernel none, and the plain script's step saved 0.85-1.18 ms against 0.44 ms priced without
# them. ``steps.optimizer_faults`` counts them; the loop's price adds them.
PAGE_FAULT_S = 0.9e-6
# torch 2.13's CPU sqrt (AVX512) is slow on zeros: a float tensor with half its values zero
# took ~11.5 ns a zero against 0.13-0.29 ns a value with none (16 K-1 M elements, one thread,
# this project's machine; 10 % zeros already doubled an Adam loop over 8 x 64 K floats, 1.96
# against 1.03 ms). The per-parameter loop takes exp_avg_sq.sqrt() every step, and exp_avg_sq is
# zero wherever the gradients were (dead ReLU units: unet's are 42 % zero); the fused kernel's
# time did not move (0.49-0.51 ms at 0 to 100 % zeros). A zero-free sqrt costs at most
# SQRT_CALL_S + SQRT_S_PER_ELEMENT x elements; what a profiled loop sqrt takes beyond that (and
# beyond the profiler's own cost per op) is the penalty, priced into the loop as measured.
SQRT_CALL_S = 2.0e-6
SQRT_S_PER_ELEMENT = 0.3e-9
# Below this many times their zero-free price a step's sqrt ops ran slow, not on zeros: the same
# Adam over a zero-free 512x512 weight took 0.90-1.63x the price a step under the profiler on
# an AMD EPYC (CI's rehearsal of d10a1e6 read 0.052 ms of "excess" there), while zeros make a
# sqrt 3x (every other value zero) to 4.7x (7 of 8 zero) its price in that loop on that CPU.
SQRT_NOISE_RATIO = 2.0
# A penalty under this a step is not named in the finding's text (it is still priced).
SQRT_EXCESS_MIN_S = 10e-6
# What one optimizer.step() call costs around the update itself (hooks, the parameter
# gathering of _init_group, the profiler's record_function): 66-74 us in the quiet fits above.
# Only used to read a run's pace: its unprofiled step() calls against the update's price plus
# this (``pace``).
STEP_CALL_CPU_S = 70e-6
# How far a run's pace may move the prices: beyond, the unprofiled figure measures something
# else than the update (a 1.7x slower thread CPU was measured under load 2-3 here).
PACE_RANGE = (0.25, 4.0)
# A loop priced under this is read for no pace: the ~70 us call around it would set it.
PACE_MIN_LOOP_S = 100e-6
# The optimizers those figures were measured for. Others (Adagrad, SGD) are still found, but
# their saving is unranked: recsys_embeddingbag's fused Adagrad was predicted 0.25 ms and saved
# 0.07 (benchmarks/advice.py), i.e. it kept ~0.8 of the loop.
CPU_CALIBRATED = ("Adam", "AdamW")
# A priced CPU saving under MIN_PRICED_CPU_S (metrics/noise_floor.py, with the measurements) is
# unranked (impact unknown).


def loop_cpu_s(n_ops: float, pbytes: int) -> float:
    """Full-speed CPU time of a per-parameter loop of ``n_ops`` ops over ``pbytes`` of
    parameters (the step() machinery around it left out)."""
    return n_ops * LOOP_CPU_S_PER_OP + pbytes * LOOP_CPU_S_PER_PARAM_BYTE


def fused_cpu_s(n_tensors: int, pbytes: int) -> float:
    """CPU time of the fused kernel updating ``n_tensors`` parameters of ``pbytes`` in all
    (the step() machinery around it left out)."""
    return n_tensors * FUSED_CPU_S_PER_TENSOR + pbytes * FUSED_CPU_S_PER_PARAM_BYTE


def zero_free_sqrt_s(numel: int, sibling_s: float | None = None) -> float:
    """The most a sqrt of ``numel`` floats with no zeros in it costs: its price, or, where the
    loop's next op on the same elements was measured (``sibling_s``: Adam's ``/
    bias_correction2_sqrt``, Adagrad's and RMSprop's ``.add_(eps)``, which zeros do not slow),
    that op's time if more. The price was fitted on one CPU; the sibling is this run's own: a
    small sqrt took 4-6 us a call on an AMD EPYC against the 2 us priced, so a zero-free loop
    of small tensors read as twice its price there (CI's rehearsal of fd87883)."""
    priced = SQRT_CALL_S + numel * SQRT_S_PER_ELEMENT
    return max(priced, sibling_s) if sibling_s is not None else priced


def step_sqrt_excess_s(took_s: float, zero_free_s: float) -> float:
    """A step's zeros penalty: what its loop's sqrt ops took in all (the profiler's cost per
    op taken out) beyond their zero-free price, when they took over SQRT_NOISE_RATIO times
    that price; else 0.0 (a loaded or slower machine, not zeros)."""
    return took_s - zero_free_s if took_s > SQRT_NOISE_RATIO * zero_free_s else 0.0


def pace(unprofiled_s: float, loop_s: float, calls: int) -> float:
    """How much slower (above 1) or faster this run's machine ran the update than the quiet
    machine the prices were measured on: the unprofiled ``optimizer.step()`` time a step
    (``calls`` calls of a loop priced ``loop_s`` in all) against its price, within PACE_RANGE.
    Thread CPU time grows with the machine's load (a busy sibling core: 3.56 us an op fit under
    load 2.3 against 2.06 quiet, benchmarks/fused_optimizer_cpu.py), and verify measures the
    saving at the load of its own sitting."""
    priced = loop_s + calls * STEP_CALL_CPU_S
    lo, hi = PACE_RANGE
    return min(hi, max(lo, unprofiled_s / priced)) if priced > 0 else 1.0
