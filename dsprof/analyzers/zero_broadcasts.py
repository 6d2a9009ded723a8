"""Finding: ZeroRedundancyOptimizer broadcasting every parameter on its own after each step.

Example:
    ``ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=AdamW)`` over DDP on 2 gloo
    ranks, a 12-block MLP (50 parameters): each rank updates the parameters it owns, then ZeRO
    broadcasts each one from its owner, 50 broadcasts a step taking 65.5 ms against DDP's
    8.3 ms of all-reduce, a 56.2 ms median step. With ``parameters_as_bucket_view=True`` ZeRO
    keeps each rank's parameters in one flat bucket and sends one broadcast per rank: 2
    broadcasts, 7.2 ms, a 7.0 ms median step (measured, 4 Dec). The exposed-communication
    finding saw only DDP's all-reduces to compress ("saves 1.44 ms/step").

Pattern:
    the trace holds ``Optimizer.step#ZeroRedundancyOptimizer.step`` and, per rank and step,
    more than ``MIN_PER_RANK`` broadcasts for each rank of the job (bucketed, ZeRO sends one
    per rank). Preconditions: the steps and the message sizes of the broadcasts are known.

Algorithm:
    as ``unbucketed_comms``: a least-squares line through (bytes, duration) of the rank's
    broadcasts gives the fixed cost of one; one bucket per rank sends the same bytes in
    ``world_size`` broadcasts, so communication falls by ``(n - world_size) x fixed cost`` a
    step, scaled by the exposed share of communication, less the exposed communication other
    findings claim (``claims.py``).
"""

from __future__ import annotations

import statistics

from dsprof.analyzers.claims import EXPOSED_COMM
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.analyzers.unbucketed_comms import (
    UnbucketedAllReduceAnalyzer,
    busiest_rank_steps,
    fixed_cost,
)
from dsprof.findings import Evidence, Finding
from dsprof.units import fmt_bytes

ZERO_STEP = "Optimizer.step#ZeroRedundancyOptimizer.step"
# broadcasts a step, per rank of the job, above which ZeRO is not bucketing: bucketed, it
# sends one per rank (the 12-block MLP above: 50 for 2 ranks unbucketed, 2 bucketed)
MIN_PER_RANK = 2

_FIX = (
    "# ZeRO broadcasts each updated parameter from its owner after every step; with its\n"
    "# parameters in one flat bucket per rank it sends one broadcast per rank:\n"
    "optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW,\n"
    "                                    parameters_as_bucket_view=True, lr=...)\n"
    "# (under DDP, overlap_with_ddp=True with a hook_with_zero_step comm hook also overlaps\n"
    "#  the step and its broadcasts with backward)")


class ZeroBroadcastsAnalyzer(Analyzer):
    name = "zero_broadcasts"
    requires = ("comms", "ops", "steps")
    claims = ((EXPOSED_COMM, ("comm.zero_broadcasts",)),)
    reads = (EXPOSED_COMM,)

    def run(self, ctx: Context) -> list[Finding]:
        if not ctx.run.sql(f"SELECT EXISTS (SELECT 1 FROM ops WHERE name = '{ZERO_STEP}')")[0][0]:
            return []
        busiest = busiest_rank_steps(ctx, "broadcast")
        if busiest is None:
            return []
        rank, steps = busiest
        world = int(ctx.run.manifest.world_size or ctx.run.sql(
            "SELECT count(DISTINCT rank) FROM comms WHERE collective = 'broadcast'")[0][0])
        n = statistics.median(int(r[2]) for r in steps)
        if n <= MIN_PER_RANK * world:
            return []
        total = statistics.median(int(r[4]) for r in steps)
        comm_ns = statistics.median(int(r[5]) for r in steps)
        alpha, per_byte = fixed_cost(ctx, rank, "broadcast")
        fewer_ns = max(0.0, (n - world) * alpha)
        exposed = UnbucketedAllReduceAnalyzer._exposed_share(ctx, rank)
        claimed = ctx.claims.claimed_s(EXPOSED_COMM) * 1e9
        saving = max(0.0, min(fewer_ns * exposed, exposed * comm_ns - claimed))
        worst = max(steps, key=lambda r: int(r[5]))
        return [Finding(
            analyzer=self.name, kind="comm.zero_broadcasts", key=f"rank{rank}",
            title=(f"ZeroRedundancyOptimizer(..., parameters_as_bucket_view=True): it "
                   f"broadcasts each parameter on its own, {n:.0f} broadcasts {ctx.per_step} "
                   f"for {world} ranks"),
            saving_s=saving / 1e9, confidence="medium" if per_byte is not None else "low",
            explanation=(
                f"Rank {rank}, median over {len(steps)} steps: {n:.0f} broadcasts moving "
                f"{fmt_bytes(total, 1)} in {comm_ns / 1e6:.2f} ms, after each "
                "ZeroRedundancyOptimizer step (each rank sends the parameters it updated). "
                f"Each pays a fixed cost of about {alpha / 1e3:.1f} us "
                + ("(intercept of duration against bytes over this rank's broadcasts)"
                   if per_byte is not None else "(half the median duration: sizes too alike "
                   "to fit)")
                + f"; with one bucket per rank the same bytes need {world} broadcasts, "
                f"{fewer_ns / 1e6:.2f} ms less communication. {exposed:.0%} of communication "
                "is exposed (not hidden by compute)"
                + (f" and other findings claim {claimed / 1e6:.2f} ms of it" if claimed else "")
                + f", so the step gets {saving / 1e6:.2f} ms shorter."),
            evidence=(Evidence(f"step {worst[1]}: {worst[2]} broadcasts, "
                               f"{fmt_bytes(float(worst[4]), 1)}, {int(worst[5]) / 1e6:.2f} ms",
                               rank=rank, step=int(worst[1]), value=int(worst[2])),),
            fix=_FIX,
            verify=ctx.ranks_command or "",
            data={"rank": rank, "per_step": n, "bytes_per_step": total, "world_size": world,
                  "alpha_us": alpha / 1e3, "exposed_share": exposed,
                  "claimed_elsewhere_ms": claimed / 1e6})]
