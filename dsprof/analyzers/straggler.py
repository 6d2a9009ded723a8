"""Straggler rank: one rank arrives last at most collectives and every other rank waits.

Example:
    rank 3 reaches each all-reduce 40 ms after the others (a slower host, a longer shard,
    a data loader with fewer workers); ranks 0-2 spend those 40 ms waiting inside NCCL/gloo.
Pattern:
    over the collectives matched across ranks (comm_skew.py), one rank is last in at least
    three quarters of them and the gap it causes (its arrival minus the next-latest rank's) is
    at least 1 ms and 5 % of a step, and over the run's step-time noise (``metrics.noise``:
    a gap a verify could not tell from none is not a straggler). A trace that holds only some
    of the job's ranks (a sampled set) cannot name one: the slowest rank may be missing.
Noise margin:
    on a busy machine one rank of a steady job is now and then descheduled just before a
    collective, and with a short profiled window the same rank can come last at every
    collective by chance (two ranks, two steps: one run in two). A gap made that way is of the
    size of a rank's step-to-step variation, so the gap must exceed 1.5 x the ranks' step-time
    spread: the median over ranks of each rank's sd over the steps that ran the program's work
    (``metrics.noise.rank_step_spread``: robust from five steps on, the sample sd below), or
    the run's steady-step sd when that is larger. And the rank must be late step after step:
    its mean lateness per step (its arrival minus the latest other rank's, negative where it
    was not last; ``skew.lateness_by_step``) over at least two steps, more than its standard
    error times Student's t for that many steps (12.7 for two steps, 3.2 for four, 2 from
    about 60: "two standard errors" when the sd itself comes from a few steps). A rank held
    back every step by a slower host or a longer shard clears both; a steady run does not.
Waiting for a CPU:
    a rank whose training thread waited on the run queue (``steps.runq_ns``, Linux) in the
    steps the collectives were matched in, on average ``RUNQ_SHARE`` of the gap a step more
    than the other ranks' threads, is late because the machine's cores were busy (other
    processes, ranks sharing the host): no straggler, and ``skipped`` says so. 2 gloo ranks
    under DDP on the 2-core machine beside other jobs got "Rank 1 is a straggler ... saves
    6.62 ms/step" (high) in 1 run of 3, where its thread's CPU time in steps 7-9 was
    8.0/8.0/7.6 ms against rank 0's 8.4/8.3/7.7. The thread's CPU time alone cannot say it:
    a rank that sleeps (a lock, I/O) is off the CPU too, and is a straggler to fix.
Algorithm:
    saving per step = that gap summed over the collectives where the rank came last, divided
    by the steps they span: what every step would gain if the rank kept pace with the
    next-slowest one. The rank's step is compared with the others' by phase, to say where its
    extra time goes.
"""

from __future__ import annotations

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.comm.skew import collective_skew, lateness_by_step, rank_skew
from dsprof.metrics.noise import has_column, rank_step_spread, t_975

MIN_LAST_SHARE = 0.75
MIN_GAP_S = 1e-3
MIN_STEP_SHARE = 0.05
# The gap must exceed this many standard deviations of a rank's step time (see "Noise margin").
NOISE_SDS = 1.5
# A rank whose thread waited for a CPU this share of the gap more than the others' is late by
# the machine (see "Waiting for a CPU").
RUNQ_SHARE = 0.5


class StragglerAnalyzer(Analyzer):
    name = "straggler"
    requires = ("comms",)

    def skip_reason(self, ctx: Context) -> str | None:
        n = ctx.run.sql("SELECT count(DISTINCT rank) FROM comms")[0][0]
        if n < 2:
            return "needs the collectives of two or more ranks"
        world = int(ctx.run.manifest.world_size or 0)
        if world > n:
            return (f"the run holds {n} of the job's {world} ranks: a straggler cannot be named "
                    "from part of the job (the slowest rank may be one that is missing)")
        return None

    def run(self, ctx: Context) -> list[Finding]:
        skews = rank_skew(ctx.run.con, ctx.meta)
        if len(skews) < 2:
            return []
        worst = max(skews, key=lambda s: (s.gap_caused_ns, -s.rank))
        per_step_s = worst.gap_caused_ns / max(worst.steps, 1) / 1e9
        share = worst.times_last / max(worst.collectives, 1)
        step_s = ctx.step_s or 0.0
        if share < MIN_LAST_SHARE or per_step_s < MIN_GAP_S or \
                (step_s and per_step_s < MIN_STEP_SHARE * step_s):
            return []
        noise = ctx.noise
        if noise is not None and noise.inside(per_step_s):
            return []  # inside the run's own step-to-step noise: no rank is reliably behind
        spread_s = step_spread_s(ctx)
        if per_step_s <= NOISE_SDS * spread_s:
            return []  # a gap the machine's step-to-step variation can make by itself
        late = lateness_by_step(ctx.run.con, ctx.meta, worst.rank)
        if not steadily_late(late):
            return []  # late on average, but not step after step: a delay, not a straggler
        extra_runq_s = _extra_runq_s(ctx, worst.rank)
        if extra_runq_s is not None and extra_runq_s >= RUNQ_SHARE * per_step_s:
            # the rank's lateness is its thread waiting for a CPU: the machine's
            self.no_finding_reason = (
                f"rank {worst.rank} came last at {worst.times_last} of {worst.collectives} "
                f"collectives, {per_step_s * 1e3:.1f} ms {ctx.per_step} behind, but its "
                f"training thread waited {extra_runq_s * 1e3:.1f} ms {ctx.per_step} more than "
                "the other ranks' for a CPU (other processes, or ranks sharing the host's "
                "cores): noise of the machine, not a straggler")
            return []
        others = [s for s in skews if s.rank != worst.rank]
        wait_others = sum(s.wait_ns for s in others) / max(len(others), 1) / \
            max(worst.steps, 1) / 1e6
        phases = self._phase_gap(ctx, worst.rank)
        where = f" Its steps spend more time in {phases}." if phases else ""
        top = collective_skew(ctx.run.con, ctx.meta, limit=5)
        evidence = tuple(
            Evidence(f"step {c['step']}: {c['collective']} #{c['call']} on group "
                     f"{c['group'] or '?'}: rank {c['last_rank']} arrived "
                     f"{c['skew_ns'] / 1e6:.1f} ms after the first rank",
                     rank=int(c["last_rank"]), step=int(c["step"]), value=c["skew_ns"] / 1e9)
            for c in top)
        return [Finding(
            analyzer=self.name, kind="comm.straggler", key=f"rank {worst.rank}",
            title=f"Rank {worst.rank} is a straggler: the other ranks wait "
                  f"{wait_others:.1f} ms {ctx.per_step} for it",
            saving_s=per_step_s, confidence="medium",
            explanation=(
                f"Rank {worst.rank} arrived last at {worst.times_last} of {worst.collectives} "
                f"collectives matched across {len(skews)} ranks over {worst.steps} steps, "
                f"{per_step_s * 1e3:.1f} ms {ctx.per_step} behind the next-latest rank; the "
                f"others waited {wait_others:.1f} ms {ctx.per_step} on average. If it kept pace, "
                f"each step would end about {per_step_s * 1e3:.1f} ms sooner.{where} The gap is "
                f"over {NOISE_SDS:g} x the ranks' step-time spread ({spread_s * 1e3:.2f} ms "
                "sd), more than this machine's noise makes by itself."),
            evidence=evidence,
            fix=("# Find what makes this rank slower and even it out, e.g.:\n"
                 "# - uneven shards (sequence lengths): balance them per rank, or bucket by length\n"
                 "# - input pipeline: DataLoader(..., num_workers=N, pin_memory=True) on every rank\n"
                 "# - a busy or slower host/GPU: check other processes, clocks, thermal limits\n"
                 f"# then compare: dsprof summary RUN (rank {worst.rank} vs the others)"),
            verify=ctx.ranks_command or "",
            data={"ranks": [s.__dict__ for s in skews], "collectives": top,
                  "step_spread_s": spread_s},
        )]

    @staticmethod
    def _phase_gap(ctx: Context, rank: int) -> str:
        """The phases where the rank's profiled steps take longer than the other ranks'."""
        if not ctx.run.has("ops"):
            return ""
        rows = ctx.run.sql("""
            WITH per AS (
                SELECT rank, phase, sum(self_ns) / count(DISTINCT step) AS ns
                FROM ops WHERE step IS NOT NULL AND cat = 'cpu_op' GROUP BY rank, phase)
            SELECT phase, max(CASE WHEN rank = ? THEN ns END)
                          - avg(CASE WHEN rank <> ? THEN ns END) AS extra
            FROM per GROUP BY phase HAVING extra > 1e6 ORDER BY extra DESC LIMIT 2""",
                           [rank, rank])
        return " and ".join(f"{p} (+{e / 1e6:.1f} ms)" for p, e in rows)


def _extra_runq_s(ctx: Context, rank: int) -> float | None:
    """The rank's mean run-queue wait a step over the other ranks' mean, in the steps the
    collectives were recorded in (seconds), or None where the run did not read it."""
    if not ctx.nonempty("steps") or not has_column(ctx.run, "steps", "runq_ns"):
        return None
    rows = ctx.run.sql("""
        SELECT (rank = ?) AS mine, avg(runq_ns) FROM steps
        WHERE runq_ns IS NOT NULL AND step IN (SELECT DISTINCT step FROM comms)
        GROUP BY mine""", [rank])
    by = {bool(mine): float(ns) for mine, ns in rows if ns is not None}
    if True not in by or False not in by:
        return None
    return (by[True] - by[False]) / 1e9


def step_spread_s(ctx: Context) -> float:
    """A rank's step-to-step variation on this run: the median over ranks of each rank's robust
    step-time sd, or rank 0's steady-step sd when larger (0 when nothing measures it)."""
    spreads = sorted(n.sd_s for n in rank_step_spread(ctx.run).values())
    median = 0.0
    if spreads:
        mid = len(spreads) // 2
        median = spreads[mid] if len(spreads) % 2 else (spreads[mid - 1] + spreads[mid]) / 2
    steady = ctx.noise.sd_s if ctx.noise is not None else 0.0
    return max(median, steady)


def steadily_late(late_ns: list[int]) -> bool:
    """Mean lateness over steps above its standard error times Student's t for that many
    steps (about two standard errors from a few dozen steps on), over two or more steps."""
    if len(late_ns) < 2:
        return False
    n = len(late_ns)
    mean = sum(late_ns) / n
    sd = (sum((x - mean) ** 2 for x in late_ns) / (n - 1)) ** 0.5
    return mean > 0 and mean > t_975(n - 1) * sd / n ** 0.5
