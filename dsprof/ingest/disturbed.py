"""Which steps dsprof itself disturbed: the ``steps.disturbed`` column.

A step is evidence of the program's own speed only when dsprof did not slow it down. The
reasons, in the order they are checked (the first that applies is recorded):

- ``debug_trace`` / ``anomaly_check``: every step of a run made with ``DS_LOG_LEVEL=DEBUG``
  (each op is logged) or ``--detect-anomaly`` (each op's outputs are checked for NaN/Inf);
- ``setup``: step 0 holds the script's setup (imports, model build, first batch);
- ``first_call``: step 1 holds the first calls (lazy initialisation, and ``torch.compile``
  or ``DS_COMPILE`` compiling);
- ``earlier_loop`` / ``loop_start`` / ``later_loop``: a run can hold several loops one after
  another (collectors/steps.py ``loop_starts``): forward calls before the script trains
  (features extracted by a frozen encoder, an evaluation before the optimizer is built), an
  LR range test before the training, a sweep's configurations, fine-tuning after
  pre-training. The run's step times and op-level findings describe one of them: the latest
  loop that has a profiler window (the timeline gives each new loop windows of its own and
  sets the earlier ones' aside, collectors/window_files.py), else the latest loop. Steps of
  the loops before it are ``earlier_loop`` (step 0 stays setup); its own first two steps are
  ``loop_start`` (as steps 0 and 1 of a run: the script's code between the loops with the
  first iteration, then the first calls of the second, 2.8 ms against a median of 1.7 in a head
  trained on extracted features); the steps of the loops after it (which got no window:
  too few steps) are ``later_loop``, with the last step of a forward loop before training
  (the code between the loops and the training's first forward: 4.9 ms against 0.4);
- ``window``: recorded op by op by a profiler window;
- ``warmup``: the profiler's warm-up before a window (it already records, then discards);
- ``trace_write``: the step right after a window, which pays for writing the window's trace.
- ``trace_aftermath``: a step after the ``trace_write`` one that measurably still paid for the
  window: it took more fresh pages than nearly every steady step (the window's event buffers
  moved the heap, and the step's tensors were mapped anew) and ran slower than the steady
  median. Only when measured: most runs have none since the timeline frees the profiler's
  results in the ``trace_write`` step (collectors/timeline.py ``release_results``); before,
  fusion_mlp's step after it ran 1.1-2.7x the median with 4,000-9,700 faults against a median
  of 1,000-1,800.
- ``autograd_anomaly``: the script's own ``torch.autograd.set_detect_anomaly(True)`` was on
  (a Python stack recorded for every forward op, every backward output checked): the step
  times the debugging aid;
- ``user_profiler``: the script's own torch.profiler session was open (from the step it
  started in to the one it stopped in, which also writes its trace): dsprof's op timeline
  stepped aside, and the step pays for the script's profiling;
- ``split_iteration``: a loop with two optimizers, the first of which steps several times an
  iteration (a WGAN's critic, 5 steps per generator step): until the optimizer that steps last
  took the boundaries over (in the second iteration), each of the first one's steps ended a
  step, and the step in progress at the hand-over spans more than an iteration. Those steps
  are no iterations (1.5 ms against 7.7 ms: a WGAN-GP's steps 2-4 were counted as steady).

Null means steady: the program ran as it would without dsprof. Analyzers take step times,
noise and outliers from steady steps only (``dsprof.metrics.noise``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

FIRST_STEADY_STEP = 2
# A step after trace_write is its aftermath when it took this many fresh pages more than the
# steady median (4 MiB: 1-2 ms of faulting at the ~1-1.5 us a page measured on CPU runs) ...
AFTERMATH_MIN_FAULTS = 1000
# ... and more than this quantile of the steady steps (a loop whose every step maps pages anew
# shows it in its steady steps too, and then none is an aftermath)
AFTERMATH_FAULT_QUANTILE = 0.9
# how many steps after trace_write may be marked, one after another, while each is measured so
AFTERMATH_MAX_STEPS = 3
# the steady steps a comparison needs
AFTERMATH_MIN_STEADY = 4


def run_disturbance(settings: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """The reason every step of a run is disturbed (a DEBUG trace or anomaly checks), or
    None. ``settings`` and ``env`` are meta.json's."""
    if str(env.get("DS_LOG_LEVEL", "")).strip().upper() == "DEBUG":
        return "debug_trace"
    if settings.get("detect_anomaly"):
        return "anomaly_check"
    return None


def profiler_warmup(settings: Mapping[str, Any]) -> int:
    """Steps before each window that the profiler already records (its warm-up); with no
    wait the profiler also starts in the step before the window, so that one counts too."""
    warmup = int(settings.get("warmup", 1) or 0)
    if int(settings.get("wait", 0) or 0) == 0:
        warmup = max(warmup, 1)
    return warmup


def disturbed_reasons(n: int, windows: Iterable[Mapping[str, Any]],
                      settings: Mapping[str, Any], env: Mapping[str, str],
                      decided_step: int | None = None,
                      handover_step: int | None = None,
                      autograd_anomaly: list[bool] | None = None,
                      user_profiler: Iterable[Iterable[int]] = (),
                      step_faults: Sequence[int | None] | None = None,
                      dur_ns: Sequence[int] | None = None,
                      loop_starts: Sequence[int] = (),
                      sources: Sequence[str] | None = None,
                      loop: int | None = None) -> list[str | None]:
    """The ``disturbed`` value of each of a ``dsprof run``'s ``n`` steps.

    ``decided_step``: where backward() became the step source while the script ran (no
    optimizer). Until then no step was known, so the timeline's whole-run capture recorded
    every step up to it, and the step after it paid for stopping that capture: all "capture".
    ``step_faults`` and ``dur_ns`` (per step) measure the windows' aftermath; without them
    none is marked. ``loop_starts``: the first step of each loop after the first; ``sources``
    what marked each step; ``loop``: the loop whose steps are the run's (an index into the
    loops), by default :func:`chosen_loop`.
    """
    whole = run_disturbance(settings, env)
    if whole:
        return [whole] * n
    out: list[str | None] = [None] * n
    warmup = profiler_warmup(settings)

    def mark(step: int, reason: str) -> None:
        if 0 <= step < n and out[step] is None:
            out[step] = reason

    for step in range(min(FIRST_STEADY_STEP, n)):
        mark(step, "setup" if step == 0 else "first_call")
    edges = loop_edges(loop_starts, n)
    if len(edges) > 2:
        _mark_loops(out, mark, edges, windows, sources or (), loop)
    for step, on in enumerate(autograd_anomaly or []):
        if on:
            mark(step, "autograd_anomaly")
    for first, last in user_profiler:
        for step in range(int(first), int(last) + 1):
            mark(step, "user_profiler")
    if decided_step is not None:
        for step in range(decided_step + 2):
            mark(step, "capture")
    if handover_step is not None:
        for step in range(handover_step + 1):
            mark(step, "split_iteration")
    for w in windows:
        steps = [int(s) for s in w.get("steps") or []]
        if not steps:
            continue
        for s in steps:
            mark(s, "window")
        for s in range(min(steps) - warmup, min(steps)):
            mark(s, "warmup")
        mark(max(steps) + 1, "trace_write")
    if step_faults is not None and dur_ns is not None:
        _mark_aftermath(out, windows, step_faults, dur_ns)
    return out


def chosen_loop(edges: Sequence[int], windows: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(first step, end) of the loop a run's step times and op-level record are of: the
    latest loop with a recorded window step, else the latest loop. ``edges``: 0, each later
    loop's first step, and the step count."""
    loops = list(pairwise(edges))
    recorded = [int(s) for w in windows if w.get("kind", "window") == "window"
                for s in w.get("steps") or []]
    chosen = max((i for i, (a, b) in enumerate(loops) if any(a <= s < b for s in recorded)),
                 default=len(loops) - 1)
    return loops[chosen]


def in_loop_reasons(edges: Sequence[int],
                    reasons: Callable[[int | None], list[str | None]]) -> list[str | None]:
    """The ``steps.loop_disturbed_by`` column: each step's reason as if its own loop were the
    one the run's step times are of. ``reasons(loop)`` is :func:`disturbed_reasons` with that
    ``loop``; ``edges`` are :func:`loop_edges`. With one loop, the ``disturbed_by`` column.
    One pass over the run per loop: 200 loops of 500 steps took 2 s here, a sweep of 20
    configurations of 500 steps ~0.02 s."""
    loops = list(pairwise(edges))
    if len(loops) < 2:
        return reasons(None)
    return [r for k, (a, b) in enumerate(loops) for r in reasons(k)[a:b]]


def loop_index(edges: Sequence[int]) -> list[int]:
    """The ``steps.loop`` column: each step's loop, 0 for the first (``edges``:
    :func:`loop_edges`)."""
    return [k for k, (a, b) in enumerate(pairwise(edges)) for _ in range(a, b)]


def _mark_loops(out: list[str | None], mark: Callable[[int, str], None], edges: list[int],
                windows: Iterable[Mapping[str, Any]], sources: Sequence[str],
                loop: int | None = None) -> None:
    """Set apart the steps of every loop but ``loop``, by default :func:`chosen_loop` (module
    docstring)."""
    first, end = (chosen_loop(edges, windows) if loop is None
                  else list(pairwise(edges))[loop])
    for step in range(1, first):  # (step 1's first calls were the first loop's too)
        if out[step] in (None, "first_call"):
            out[step] = "earlier_loop"
    if first:
        mark(first, "loop_start")
        mark(first + 1, "loop_start")
    n = edges[-1]
    if 0 < end < min(n, len(sources)) and sources[end - 1] == "forward" \
            and sources[end] != "forward":
        mark(end - 1, "later_loop")
    for step in range(end, n):
        mark(step, "later_loop")


def loop_edges(loop_starts: Iterable[Any], n: int) -> list[int]:
    """0, the first step of each later loop within the ``n`` steps, and ``n``."""
    return [0, *sorted({int(s) for s in loop_starts if 0 < int(s) < n}), n]


def _mark_aftermath(out: list[str | None], windows: Iterable[Mapping[str, Any]],
                    faults: Sequence[int | None], dur_ns: Sequence[int]) -> None:
    """Mark ``trace_aftermath`` the steps after each ``trace_write`` step that took fresh
    pages no steady step takes and ran slower than the steady median, from the first such
    step on, while each is so (at most :data:`AFTERMATH_MAX_STEPS`)."""
    n = len(out)
    firsts = sorted({max(int(s) for s in w["steps"]) + 2 for w in windows if w.get("steps")})
    near = {f + k for f in firsts for k in range(AFTERMATH_MAX_STEPS)}
    steady = [i for i in range(n) if out[i] is None and i not in near
              and i < len(faults) and faults[i] is not None and i < len(dur_ns)]
    if len(steady) < AFTERMATH_MIN_STEADY:
        return
    steady_faults = np.array([faults[i] for i in steady], np.float64)
    bar = max(float(np.quantile(steady_faults, AFTERMATH_FAULT_QUANTILE)),
              float(np.median(steady_faults)) + AFTERMATH_MIN_FAULTS)
    median_ns = float(np.median([dur_ns[i] for i in steady]))
    for first in firsts:
        for step in range(first, min(first + AFTERMATH_MAX_STEPS, n, len(faults), len(dur_ns))):
            got = faults[step]
            if out[step] is not None or got is None or got <= bar or dur_ns[step] <= median_ns:
                break
            out[step] = "trace_aftermath"
