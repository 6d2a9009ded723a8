"""Which steps dsprof itself disturbed: the ``steps.disturbed`` column.

A step is evidence of the program's own speed only when dsprof did not slow it down. The
reasons, in the order they are checked (the first that applies is recorded):

- ``debug_trace`` / ``anomaly_check``: every step of a run made with ``DS_LOG_LEVEL=DEBUG``
  (each op is logged) or ``--detect-anomaly`` (each op's outputs are checked for NaN/Inf);
- ``setup``: step 0 holds the script's setup (imports, model build, first batch);
- ``first_call``: step 1 holds the first calls (lazy initialisation, and ``torch.compile``
  or ``DS_COMPILE`` compiling);
- ``window``: recorded op by op by a profiler window;
- ``warmup``: the profiler's warm-up before a window (it already records, then discards);
- ``trace_write``: the step right after a window, which pays for writing the window's trace.
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

from collections.abc import Iterable, Mapping
from typing import Any

FIRST_STEADY_STEP = 2


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
                      user_profiler: Iterable[Iterable[int]] = ()) -> list[str | None]:
    """The ``disturbed`` value of each of a ``dsprof run``'s ``n`` steps.

    ``decided_step``: where backward() became the step source while the script ran (no
    optimizer). Until then no step was known, so the timeline's whole-run capture recorded
    every step up to it, and the step after it paid for stopping that capture: all "capture".
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
    return out
