"""The facts of a run that several stages state, defined once: step time, peak memory, device.

Every command that shows one of these (``summary``, ``diff``, ``verify``, ``tune``, the
dashboard) and the analyzers' rating of their findings read them from ``run.facts``, so the same
run shows the same step time, peak and measured saving everywhere.

**Step time.** The steps that count are those with a positive duration that dsprof did not
disturb (``steps.disturbed``: a profiler window, its warm-up, the step after it). Of a
``dsprof run`` they are its *full-speed* steps: also not step 0 (setup) or step 1 (first calls,
``DS_COMPILE`` compiles), not a step in which torch.compile compiled (a recompile) nor the
one after it (the new graph's first run). When a run has none (a short run that is all profiled), the rule
falls back to the profiler's warm-up steps (Kineto prepared, recording nothing: near full
speed), then to the steps the profiler recorded or warmed up in, then to every step after the
setup, then to every step, and ``rule`` says which held. The step that wrote a window's trace
and the first calls' step are left out of the first two fallbacks: in a 6-step corpus run of
the tiny GPT-2 (wait 1, warm-up 1, active 2) they were 105 and 49 ms against a 6.5 ms step, and
the mean over every step after setup (39 ms) pushed a 0.17 ms swap under its 0.5 % share.
An import's ProfilerStep under a tenth of the median is a fragment and never counts.
``mean_s`` is the share base for savings (time per step, summed over the run: a mean);
``median_s`` is the measured step time (robust to one slow step): a measured saving is the
difference of two runs' medians.

**Loops.** A run that held several loops one after another (meta ``loop_starts``: a sweep's
configurations, an LR range test) has its step time of one of them (ingest's choice, the
others' steps ``earlier_loop`` / ``later_loop``); ``loops`` gives each loop's own step time by
the same rule, over its steps with each step's reason as if its loop were the chosen one
(``steps.loop_disturbed_by``), so the chosen loop's figures are ``step``'s.

**Peak memory**, per rank, from the first source that has it: the allocator's per-step peak
(``steps.device_peak_bytes``, accelerators), the live bytes of ``memory_series``, the running
total of the ``memory`` table, and last the process RSS. The run's peak is the largest rank's.

**Device**: the accelerator's name from the manifest and its figures from the one table in
:mod:`dsprof.devices` (None on CPU or for a device not in the table).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsprof.devices import DevicePeak, lookup

if TYPE_CHECKING:
    from dsprof.run import Run

FIRST_FULL_SPEED_STEP = 2  # step 0 is setup; step 1 pays first calls and compilation
# steps of another loop than the one the run's window recorded (ingest/disturbed.py): no rule
# of a ``dsprof run`` counts them, short of every step
OTHER_LOOP = ("earlier_loop", "loop_start", "later_loop")

# step-time rules, from the strictest
FULL_SPEED, AFTER_SETUP, ALL_STEPS = "full-speed steps", "steps after setup", "all steps"
PROFILER_WARMUP, RECORDED = "profiler warm-up steps", "recorded steps"
# a steps row as the rules read it: (rank, step, dur_ns, disturbed, batch_size, cpu_ns,
# compiled, disturbed_by)
StepRow = tuple[Any, ...]

# peak memory sources, in the order they are preferred
ALLOCATOR_PEAK, LIVE_BYTES, MEMORY_EVENTS, PROCESS_RSS = (
    "allocator peak", "live bytes", "memory events", "process RSS")


@dataclass(frozen=True)
class StepTime:
    """Step time by the one rule (module docstring).

    Attributes:
        mean_s, median_s: over the steps that count, seconds (None without steps).
        steps: how many steps counted; ``counted`` them as (rank, step, dur_ns), in (rank,
            step) order; ``left_out`` the other steps with a duration, the same way.
        rule: which rule held (``FULL_SPEED``, ``PROFILER_WARMUP``, ``RECORDED``,
            ``AFTER_SETUP``, ``ALL_STEPS``).
        samples_per_s: mean batch size over the mean step time, when batches are known.
        cpu_mean_s: mean CPU time of the stepping thread over the same steps (``steps.cpu_ns``;
            None when any of them lacks it: imports, boundaries found after the fact). What a
            CPU-priced saving compares with: a loaded machine stretches the wall step, not the
            thread's CPU time, nor a price taken at a quiet machine's pace.
        fastest_s: the shortest step past setup of the loop the rule counts from, any kind
            (profiled, disturbed, compiled: each only runs slower), seconds: an upper bound on
            the step at a quiet machine's pace, which neither the mean nor the thread's CPU
            time is on a loaded machine (CI's 2 cores: a 6-step run's one full-speed step took
            1.16 s where its profiled steps took 32 and 40 ms).
    """

    mean_s: float | None
    median_s: float | None
    steps: int
    rule: str
    samples_per_s: float | None
    counted: tuple[tuple[int, int, int], ...] = ()
    left_out: tuple[tuple[int, int, int], ...] = ()
    cpu_mean_s: float | None = None
    fastest_s: float | None = None

    @property
    def durations_ns(self) -> list[int]:
        return [d for _, _, d in self.counted]


@dataclass(frozen=True)
class LoopTime:
    """One loop of a run that holds several one after another (``steps.loop``): an LR range
    test then the training, a sweep's configurations, training after inference forwards.

    Attributes:
        loop: its index, 0 for the first; ``first_step``, ``last_step`` its steps.
        source: what marked most of its steps (``steps.source``: optimizer, forward, ...).
        recorded: the loop the run's step times, its profiler window and op-level findings
            are of (``Facts.step`` is this loop's ``step``).
        step: its step time by the rule of :class:`StepTime`, over its own steps, each step's
            reason taken as if its loop were the run's (``steps.loop_disturbed_by``).
    """

    loop: int
    first_step: int
    last_step: int
    source: str
    recorded: bool
    step: StepTime


@dataclass(frozen=True)
class PeakMemory:
    rank: int
    bytes: int
    source: str


@dataclass(frozen=True)
class Facts:
    """Attributes:
        step: step time (:class:`StepTime`).
        peaks: peak memory per rank, with its source.
        device_name: the accelerator (None on CPU); ``device`` its figures when known.
        profiled_steps: steps inside a profiler window (all ranks).
        loops: each loop's step time where a ``dsprof run`` held several loops one after
            another (:class:`LoopTime`), else empty.
    """

    step: StepTime
    peaks: tuple[PeakMemory, ...]
    device_name: str | None
    device: DevicePeak | None
    profiled_steps: int
    loops: tuple[LoopTime, ...] = ()

    @property
    def peak(self) -> PeakMemory | None:
        """The largest rank's peak."""
        return max(self.peaks, key=lambda p: (p.bytes, -p.rank), default=None)

    @property
    def peak_bytes(self) -> int | None:
        return None if self.peak is None else self.peak.bytes

    @property
    def peak_source(self) -> str | None:
        return None if self.peak is None else self.peak.source


def measured_saving(before: Facts, after: Facts) -> tuple[float | None, int | None]:
    """(seconds per step, bytes of peak) that ``after`` saves over ``before``: the difference
    of their median step times and of their peaks (None where either lacks it)."""
    a, b = before.step.median_s, after.step.median_s
    pa, pb = before.peak_bytes, after.peak_bytes
    return (None if a is None or b is None else a - b,
            None if pa is None or pb is None else pa - pb)


def compute_facts(run: Run) -> Facts:
    manifest = run.manifest
    name = manifest.device_name()
    profiled = 0
    if run.has("steps"):
        profiled = int(run.sql("SELECT count(*) FROM steps WHERE profiled")[0][0] or 0)
    return Facts(_step_time(run), _peaks(run), name, lookup(name), profiled, _loop_times(run))


# the step compiled, or the one before it did (the new graph's first run)
COMPILED_SQL = ("(coalesce(compile_ns, 0) > 0 OR coalesce(lag(compile_ns) OVER "
                "(PARTITION BY rank ORDER BY step), 0) > 0)")


def _step_time(run: Run) -> StepTime:
    if not run.has("steps"):
        return StepTime(None, None, 0, ALL_STEPS, None)
    # a step in which torch.compile compiled is compile time, not the script's speed: it counts
    # like a step dsprof disturbed (left out of the full-speed rule), and so does the step
    # after it, the new graph's first run (a recompile for a new shape every 10 steps: each
    # next step 3.3-4.8 ms against 1.5-2.2, plain too, was an outlier "saving 0.174 ms/step")
    # (a short run that is all profiled keeps that rule for the steps after setup: a step that
    # compiled is left out of them too while any other is left)
    rows = run.sql(f"""SELECT rank, step, dur_ns, coalesce(disturbed, false),
                              batch_size, cpu_ns, {COMPILED_SQL}, disturbed_by
                       FROM steps WHERE dur_ns > 0 ORDER BY rank, step""")
    return _time_of(rows, run.manifest.is_run)


def _loop_times(run: Run) -> tuple[LoopTime, ...]:
    """Each loop's step time (``steps.loop``), when the run has several: the same rules over
    the loop's own steps, each step's reason as if its loop were the run's
    (``steps.loop_disturbed_by``)."""
    if not run.manifest.is_run or not run.has("steps") or not run.meta.get("loop_starts"):
        return ()
    from dsprof.ingest.disturbed import chosen_loop, loop_edges
    from dsprof.run import disturbed_sql  # (the run layer imports this module)

    # the manifest's windows, as the ``disturbed`` view column has them, and the in-loop
    # reason but for setup and first calls, left to the step-number rule as there
    rows = run.sql(f"""SELECT rank, step, dur_ns,
                              ((loop_disturbed_by IS NOT NULL AND loop_disturbed_by NOT IN
                                ('setup', 'first_call')) OR {disturbed_sql(run.manifest)}),
                              batch_size, cpu_ns, {COMPILED_SQL},
                              loop_disturbed_by, loop, source
                       FROM steps WHERE loop IS NOT NULL ORDER BY loop, rank, step""")
    loops = sorted({int(r[8]) for r in rows})
    if len(loops) < 2:
        return ()
    # the loop the run's step times are of: the ingest's choice (disturbed.chosen_loop)
    lead = min(int(r[0]) for r in rows)
    n = 1 + max(int(r[1]) for r in rows if int(r[0]) == lead)
    windows = [w for w in run.meta.get("windows") or [] if isinstance(w, dict)]
    edges = loop_edges(run.meta.get("loop_starts") or (), n)
    first, _ = chosen_loop(edges, windows)
    out = []
    for loop in loops:
        mine = [r for r in rows if int(r[8]) == loop]
        steps = [int(r[1]) for r in mine]
        source = Counter(str(r[9]) for r in mine).most_common(1)[0][0]
        out.append(LoopTime(loop, min(steps), max(steps), source, loop == edges.index(first),
                            _time_of([r for r in mine if int(r[2]) > 0], True)))
    return tuple(out)


def _time_of(rows: list[tuple[Any, ...]], is_run: bool) -> StepTime:
    """The step-time rule (module docstring) over ``rows`` (:data:`StepRow`, ordered by rank
    and step, positive durations)."""
    keep_rules: list[tuple[str, Callable[[StepRow], bool]]] = [(ALL_STEPS, _any_step)]
    if is_run:
        keep_rules = [(FULL_SPEED, _full_speed), (PROFILER_WARMUP, _profiler_warmup),
                      (RECORDED, _recorded), (AFTER_SETUP, _after_setup_compiled_none),
                      (AFTER_SETUP, _after_setup), *keep_rules]
    rules = keep_rules
    if not is_run and rows:
        # An import's ProfilerStep under a tenth of the median is a fragment (the profiler
        # stopped inside it, or a second span with the same number): counting it would
        # shrink the step and push savings past 100 % of it.
        med = statistics.median(int(r[2]) for r in rows)
        rows = [r for r in rows if int(r[2]) >= 0.1 * med]
    for rule, keep in rules:
        chosen = [r for r in rows if keep(r)]
        if chosen:
            break
    else:
        return StepTime(None, None, 0, ALL_STEPS, None)
    durs = [int(r[2]) for r in chosen]
    mean_s = statistics.fmean(durs) / 1e9
    batches = [r[4] for r in chosen if r[4]]
    sps = statistics.fmean(batches) / mean_s if batches and mean_s > 0 else None
    ids = {(r[0], r[1]) for r in chosen}
    cpu = [int(r[5]) for r in chosen if r[5] is not None and int(r[5]) > 0]
    # steps of the same loop past setup, whatever slowed them (an import has no loops and
    # no setup step to leave out: its steps are the profiler's)
    same_loop = [int(r[2]) for r in rows if r[7] not in OTHER_LOOP
                 and (r[1] >= FIRST_FULL_SPEED_STEP or not is_run)]
    return StepTime(mean_s, statistics.median(durs) / 1e9, len(durs), rule, sps,
                    tuple((int(r[0]), int(r[1]), int(r[2])) for r in chosen),
                    tuple((int(r[0]), int(r[1]), int(r[2])) for r in rows
                          if (r[0], r[1]) not in ids),
                    statistics.fmean(cpu) / 1e9 if len(cpu) == len(chosen) else None,
                    min(same_loop + durs) / 1e9)


def _full_speed(r: StepRow) -> bool:
    return r[1] >= FIRST_FULL_SPEED_STEP and not r[3] and not r[6]


def _profiler_warmup(r: StepRow) -> bool:
    return r[1] >= FIRST_FULL_SPEED_STEP and r[7] == "warmup" and not r[6]


def _recorded(r: StepRow) -> bool:
    # the profiler's cost per op, but not the trace's writing nor the first calls
    return r[1] >= FIRST_FULL_SPEED_STEP and r[7] in ("warmup", "window") and not r[6]


def _after_setup_compiled_none(r: StepRow) -> bool:
    # a 16-step run with a compiled optimizer step, all of it one capture: step 1 compiled
    # for 2.8 s and made the mean step 197 ms against a median of 0.77
    return r[1] >= 1 and not r[6] and r[7] not in OTHER_LOOP


def _after_setup(r: StepRow) -> bool:
    return bool(r[1] >= 1) and r[7] not in OTHER_LOOP


def _any_step(r: StepRow) -> bool:
    return True


def _peaks(run: Run) -> tuple[PeakMemory, ...]:
    queries = (
        (ALLOCATOR_PEAK, "steps", "SELECT rank, max(device_peak_bytes) FROM steps GROUP BY rank"),
        (LIVE_BYTES, "memory_series", "SELECT rank, max(total) FROM memory_series GROUP BY rank"),
        (MEMORY_EVENTS, "memory", "SELECT rank, max(allocated) FROM memory GROUP BY rank"),
        (PROCESS_RSS, "steps", "SELECT rank, max(rss_bytes) FROM steps GROUP BY rank"),
    )
    found: dict[int, PeakMemory] = {}
    for source, table, query in queries:
        if not run.has(table):
            continue
        for rank, value in run.sql(query):
            if value and int(rank) not in found:
                found[int(rank)] = PeakMemory(int(rank), int(value), source)
    return tuple(found[r] for r in sorted(found))
