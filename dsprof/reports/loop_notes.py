"""What the summary says of a run whose steps are not one training loop: an inference run's
forward calls, forward calls before the script trained, and loops one after another. Which
loop the step times and op-level findings are of is decided once, at ingest
(:func:`dsprof.ingest.disturbed.chosen_loop`); these notes say it."""

from __future__ import annotations

from typing import Any

from dsprof.ingest.disturbed import chosen_loop, loop_edges
from dsprof.run import Run
from dsprof.vocabulary import EARLIER_LOOP, EARLIER_LOOPS_DIR


def step_notes(run: Run) -> list[str]:
    """The note on the run's steps, when they are an inference run's or several loops'."""
    starts = [int(s) for s in run.meta.get("loop_starts") or [] if isinstance(s, int)]
    # the forward steps before training took over: the step its first forward ended is its
    # loop's (collectors/forward_watch.py training_forwards)
    counts = [n for (n,) in run.sql("""SELECT count(*) FROM steps WHERE source = 'forward'
                                         AND step < ? GROUP BY rank""",
                                      [min(starts, default=2**62)])]
    if counts and run.meta.get("steps_source") == "forward":
        return [(f"steps: {_forward_calls(run, counts)}: no optimizer.step() and no "
                 "backward(), so each outermost module call (no module call above it) ended a "
                 "step; under generate() that is one token's forward, a decode step (the first "
                 "of each generate() call is the prompt's prefill)")]
    if not counts and not starts:
        return []
    (first_trained,), = run.sql("SELECT min(step) FILTER (WHERE source <> 'forward') FROM steps")
    later = [s for s in starts if first_trained is None or s > first_trained]
    text = "steps: "
    if counts:
        text += (f"{_forward_calls(run, counts)} came first (no optimizer.step() or backward() "
                 "yet, so each outermost module call ended a step), then the run trained: "
                 f"{run.meta.get('steps_source')} marked the steps"
                 f"{f' from step {first_trained}' if first_trained is not None else ''}")
    if later:
        at = ", ".join(str(s) for s in later)
        text += (f"{'; ' if counts else ''}a new optimizer took the step boundaries over at "
                 f"step{'s' if len(later) > 1 else ''} {at}: a loop after another (an LR range "
                 "test, a sweep's next configuration, fine-tuning after pre-training)")
    return [text + _evidence(run, starts)]


def _forward_calls(run: Run, counts: list[int]) -> str:
    lo, hi = min(counts), max(counts)
    # per rank, as the step count is (render.summary.step_count)
    per_rank = f" per rank ({len(counts)} ranks)" if len(counts) > 1 else ""
    models = run.meta.get("forward_modules") or {}
    of = " and ".join(str(name) for name in sorted(models, key=lambda k: -models[k])[:3])
    return f"{lo if lo == hi else f'{lo}-{hi}'} inference forwards{f' of {of}' if of else ''}" \
        f"{per_rank}"


def _evidence(run: Run, starts: list[int]) -> str:
    """Which loop the step times and findings are of, and where the others' windows went."""
    (n,), = run.sql("SELECT count(*) FROM steps WHERE rank = (SELECT min(rank) FROM steps)")
    windows: list[dict[str, Any]] = [w for w in run.meta.get("windows") or []
                                     if isinstance(w, dict)]
    first, end = chosen_loop(loop_edges(starts, n), windows)
    if end < n:
        s = run.meta.get("settings") or {}
        need = sum(int(s.get(k) or 0) for k in ("wait", "warmup", "active")) + 1
        why = (f" (the schedule needs {need} once a loop starts: --wait, --warmup and --active "
               "set it)" if n - end < need else "")
        # (the last step of a forward loop may be set apart with the loop after it)
        (last,), = run.sql("SELECT max(step) FROM steps WHERE step < ? AND "
                           "coalesce(disturbed_by, '') <> 'later_loop'", [end])
        return (f"; the {n - end} steps from step {end} on got no profiler window of their "
                f"own{why}, so step times and op-level findings are of steps {first}-{last}")
    text = f"; step times and op-level findings are of the last loop, steps {first}-{n - 1}"
    aside = [w for w in windows if w.get("kind") == EARLIER_LOOP and w.get("steps")]
    if aside:
        steps = ", ".join(f"{w['steps'][0]}-{w['steps'][-1]}" for w in aside)
        ranks = [int(r) for (r,) in run.sql("SELECT DISTINCT rank FROM steps ORDER BY rank")]
        rank = f"rank{ranks[0]}" if len(ranks) == 1 else "rank<N>"
        text += (f" (the earlier loops' profiler window{'s' if len(aside) > 1 else ''}, steps "
                 f"{steps}, set aside: dsprof import -o NEW_RUN "
                 f"{run.path / 'raw' / rank / EARLIER_LOOPS_DIR} analyses them on their own)")
    return text
