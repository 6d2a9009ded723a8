"""Poor overlap: gradients are all-reduced after backward has finished, not during it.

Example:
    a loop that calls ``dist.all_reduce(p.grad)`` for each parameter after
    ``loss.backward()``, or DDP with one bucket holding the whole model: nothing is left to
    overlap the all-reduce with, so the step waits for all of it.
Pattern:
    per rank and step, the collectives issued after 90 % of the step's backward had elapsed
    (or after it ended) carry at least half of the communication time, and at most 30 % of
    the communication overlaps compute (metrics/comm/overlap.py).
Algorithm:
    the saving is the exposed time of those late collectives, capped by the backward time
    they could hide behind (median over ranks and steps). ``comm.bound`` (compression) prices
    only the exposed time this finding leaves, so the two never claim the same milliseconds.
Preconditions:
    not under DistributedDataParallel with more than one bucket: DDP's reducer already
    all-reduces each bucket as backward fills it, and with gradient accumulation (``no_sync``)
    it syncs only on the last micro-step by design, so "all-reduce during backward" is advice
    the script already follows. A DDP job whose backward issues one bucket is told to lower
    ``bucket_cap_mb`` instead, when its all-reduces move more than DDP's first bucket (1 MiB)
    a step: smaller ones are one bucket by default, and split they stay latency-bound.
"""

from __future__ import annotations

import statistics

from dsprof.analyzers.claims import EXPOSED_COMM
from dsprof.analyzers.frameworks import ddp_advice_skip_reason
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.comm.overlap import comm_overlap

MAX_OVERLAP_PCT = 30.0
MIN_LATE_SHARE = 0.5
# DDP's first bucket holds up to 1 MiB of gradients (torch's _DEFAULT_FIRST_BUCKET_BYTES): a
# job whose all-reduces move no more per step has one bucket by default, and lowering
# bucket_cap_mb would only split a latency-bound all-reduce (tests/corpus' ddp_gloo, 25.5 KiB a
# step over gloo, got "[medium] Lower DistributedDataParallel's bucket_cap_mb" in 1 of 2 CI
# rehearsals, as its late all-reduce moved across the 30 % overlap line).
SPLITTABLE_BYTES = 1 << 20


class CommOverlapAnalyzer(Analyzer):
    name = "comm_overlap"
    requires = ("comms", "ops")
    claims = ((EXPOSED_COMM, ("comm.poor_overlap",)),)

    def skip_reason(self, ctx: Context) -> str | None:
        return ddp_advice_skip_reason(ctx)  # its advice is DDP's (buckets, wrapping in DDP)

    def run(self, ctx: Context) -> list[Finding]:
        late = late_collectives(ctx)
        if late is None:
            return []
        cases, rows, saving = late
        ddp = uses_ddp(ctx)
        n_buckets = _buckets_per_step(ctx)
        if ddp and n_buckets != 1:
            return []  # DDP's buckets already overlap backward; accumulation syncs last by design
        if ddp and _all_reduce_bytes(ctx) <= SPLITTABLE_BYTES:
            # one bucket because the gradients are small: split, each all-reduce would still
            # pay a collective's latency, which is what small ones are made of
            return []
        rank, step, bwd_ns, comm_ns, late_ns, n, n_late, o, _ = max(cases, key=lambda c: c[4])
        title = ("Lower DistributedDataParallel's bucket_cap_mb: one bucket holds every "
                 "gradient, so its all-reduce starts after backward" if ddp else
                 "All-reduce the gradients during backward, not after it")
        return [Finding(
            analyzer=self.name, kind="comm.poor_overlap", key="all-reduce after backward",
            title=title,
            saving_s=saving, confidence="medium",
            explanation=(
                f"In {len(cases)} of {len(rows)} rank-steps most communication was issued in the "
                f"last 10% of backward or after it: on rank {rank}, step {step}, {n_late} of {n} "
                f"collectives ({late_ns / 1e6:.1f} of {comm_ns / 1e6:.1f} ms) started after "
                f"{0.9 * bwd_ns / 1e6:.1f} ms of a {bwd_ns / 1e6:.1f} ms backward, and only "
                f"{o.overlap_pct:.0f}% of the communication overlapped compute. Issued as each "
                f"gradient bucket is ready, it could hide behind the rest of backward: about "
                f"{saving * 1e3:.1f} ms {ctx.per_step}."),
            evidence=(Evidence(f"rank {rank} step {step}: {late_ns / 1e6:.1f} ms of "
                               f"communication issued late in or after backward",
                               rank=rank, step=step, value=late_ns / 1e9),),
            fix=("# let DDP all-reduce bucket by bucket while backward runs:\n"
                 "model = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=25)\n"
                 "# (instead of dist.all_reduce(p.grad) for each parameter after backward);\n"
                 "# already on DDP with one huge bucket? lower bucket_cap_mb so the first\n"
                 "# all-reduce starts earlier"),
            verify=ctx.ranks_command or "",
            data={"cases": [{"rank": c[0], "step": c[1], "backward_ns": c[2], "comm_ns": c[3],
                             "late_ns": c[4]} for c in cases], "ddp": ddp},
        )]


def _all_reduce_bytes(ctx: Context) -> int:
    """Median bytes all-reduced per rank and step (0 when the comms table has no sizes)."""
    row = ctx.run.sql("""SELECT median(b) FROM (SELECT rank, step, sum(in_bytes) AS b
                         FROM comms WHERE collective = 'all_reduce' AND step IS NOT NULL
                         GROUP BY rank, step)""")
    return int(row[0][0]) if row and row[0][0] else 0


def uses_ddp(ctx: Context) -> bool:
    """The job runs under DistributedDataParallel (its forward span or reducer ops)."""
    if not ctx.run.has("ops"):
        return False
    return bool(ctx.run.sql("""SELECT EXISTS (SELECT 1 FROM ops WHERE
        name LIKE 'DistributedDataParallel%' OR name LIKE '%DistributedDataParallel.forward%'
        OR name LIKE 'torch::distributed::reducer::%')""")[0][0])


def _buckets_per_step(ctx: Context) -> int | None:
    """Median DDP buckets (all-reduces issued by the reducer) per rank and step, if known."""
    from dsprof.metrics.comm.ddp_buckets import buckets

    try:
        found = buckets(ctx.run.con)
    except Exception:  # noqa: BLE001 - an odd trace: the count is simply unknown
        return None
    if not found:
        return None
    per: dict[tuple[int, int], int] = {}
    for b in found:
        per[(b.rank, b.step)] = per.get((b.rank, b.step), 0) + 1
    return int(statistics.median(per.values()))


def late_collectives(ctx: Context) -> tuple[list, list, float] | None:
    """(late cases, rank-steps, saving s/step) when most communication is issued after
    backward in at least half the rank-steps, else None. Shared with ``comm.bound`` so that
    compression is priced on what overlap leaves."""
    overlap = {(o.rank, o.step): o for o in comm_overlap(ctx.run.con, by_step=True)}
    if not overlap or not ctx.run.has("ops"):
        return None
    rows = ctx.run.sql("""
        WITH bwd AS (
            SELECT rank, step, min(start_ns) AS b0, max(start_ns + dur_ns) AS b1
            FROM ops WHERE phase = 'backward' AND step IS NOT NULL GROUP BY rank, step)
        SELECT c.rank, c.step, any_value(b.b1 - b.b0) AS bwd_ns,
               sum(c.dur_ns) AS comm_ns,
               sum(CASE WHEN coalesce(c.call_ns, c.start_ns) >= b.b0 + 0.9 * (b.b1 - b.b0)
                        THEN c.dur_ns ELSE 0 END) AS late_ns,
               count(*) AS n,
               sum((coalesce(c.call_ns, c.start_ns) >= b.b0 + 0.9 * (b.b1 - b.b0))::INT)
        FROM comms c JOIN bwd b USING (rank, step)
        GROUP BY c.rank, c.step ORDER BY c.rank, c.step""")
    cases = []
    for rank, step, bwd_ns, comm_ns, late_ns, n, n_late in rows:
        o = overlap.get((rank, step))
        if o is None or not comm_ns:
            continue
        if late_ns / comm_ns >= MIN_LATE_SHARE and o.overlap_pct <= MAX_OVERLAP_PCT:
            hideable = min(o.exposed_ns * late_ns / comm_ns, bwd_ns)
            cases.append((rank, step, int(bwd_ns), int(comm_ns), int(late_ns), n, n_late,
                          o, hideable))
    if not cases or len(cases) * 2 < len(rows):
        return None
    return cases, rows, statistics.median(c[8] for c in cases) / 1e9
