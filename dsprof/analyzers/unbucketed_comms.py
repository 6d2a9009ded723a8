"""Finding: hundreds of small all-reduces per step, one per parameter (no bucketing).

Example:
    A hand-written data-parallel loop (``for p in model.parameters(): dist.all_reduce(p.grad)``)
    or DDP with a tiny ``bucket_cap_mb``: each step issues one all-reduce per gradient, most of
    them a few KiB (NCCL picks its low-latency protocol, ``AllReduce_RING_LL``), so each pays the
    collective's fixed latency for almost no bytes.

Pattern:
    ``comms`` rows of collective ``all_reduce`` per rank and step (NCCL kernels,
    record_param_comms, gloo): at least ``MIN_PER_STEP`` a step with a median message of at most
    ``SMALL_BYTES``. Preconditions: message sizes are known (unknown sizes are not counted as
    small) and the step is known.

Algorithm:
    Per rank, a least-squares line through (bytes, duration) of its all-reduces gives the fixed
    cost per collective (the intercept, ``alpha``) and the time per byte. Bucketed into
    ``BUCKET_BYTES`` (DDP's default 25 MiB) the same bytes need ``k = ceil(bytes / 25 MiB)``
    collectives, so the communication time falls by ``(n - k) * alpha`` a step. Only the exposed
    part of communication (not hidden by compute, ``metrics.comm.overlap``) lengthens the step,
    so that saving is scaled by the exposed share, and the exposed time that the findings made
    before it claim (comm.bound, comm.poor_overlap: the claimed-time ledger, ``claims.py``) is
    taken off first: the three never claim more exposed time than there is.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from dsprof.analyzers.claims import EXPOSED_COMM
from dsprof.analyzers.comm_overlap import uses_ddp
from dsprof.analyzers.frameworks import ddp_advice_skip_reason
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.comm.overlap import comm_overlap
from dsprof.units import fmt_bytes

MIN_PER_STEP = 50
SMALL_BYTES = 1 << 20
BUCKET_BYTES = 25 << 20

_FIX = """# Let DDP bucket the gradients (25 MiB buckets, all-reduced while backward runs):
model = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=25)
# or, keeping a hand-written loop, one all-reduce over a flat buffer per step:
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
grads = [p.grad for p in model.parameters() if p.grad is not None]
flat = _flatten_dense_tensors(grads)
dist.all_reduce(flat)
flat /= dist.get_world_size()
for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
    g.copy_(synced)"""


_FIX_DDP = """# DDP's buckets are set too small: give it its default 25 MiB (or more) per bucket
model = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=25)"""

def busiest_rank_steps(ctx: Context, collective: str) -> tuple[int, list[tuple]] | None:
    """The rank that calls ``collective`` most often a step (median over its steps), with its
    steps' rows: (rank, step, calls, median bytes, bytes, duration ns); None without such
    calls."""
    rows = ctx.run.sql("""
        SELECT rank, step, count(*), median(in_bytes), sum(in_bytes), sum(dur_ns)
        FROM comms WHERE collective = ? AND step IS NOT NULL AND in_bytes IS NOT NULL
        GROUP BY rank, step ORDER BY rank, step""", [collective])
    per_rank: dict[int, list[tuple]] = {}
    for r in rows:
        per_rank.setdefault(int(r[0]), []).append(r)
    if not per_rank:
        return None
    return max(per_rank.items(), key=lambda kv: statistics.median(int(r[2]) for r in kv[1]))


class UnbucketedAllReduceAnalyzer(Analyzer):
    name = "unbucketed_allreduce"
    requires = ("comms", "steps")
    claims = ((EXPOSED_COMM, ("comm.unbucketed",)),)
    reads = (EXPOSED_COMM,)

    def skip_reason(self, ctx: Context) -> str | None:
        return ddp_advice_skip_reason(ctx)  # its advice is DDP's (buckets, wrapping in DDP)

    def run(self, ctx: Context) -> list[Finding]:
        busiest = busiest_rank_steps(ctx, "all_reduce")
        if busiest is None:
            return []
        rank, steps = busiest
        n = statistics.median(int(r[2]) for r in steps)
        size = statistics.median(float(r[3]) for r in steps)
        if n < MIN_PER_STEP or size > SMALL_BYTES:
            return []
        total = statistics.median(int(r[4]) for r in steps)
        comm_ns = statistics.median(int(r[5]) for r in steps)
        alpha, per_byte = fixed_cost(ctx, rank, "all_reduce")
        k = max(1, math.ceil(total / BUCKET_BYTES))
        fewer_ns = max(0.0, (n - k) * alpha)
        exposed = self._exposed_share(ctx, rank)
        claimed = ctx.claims.claimed_s(EXPOSED_COMM) * 1e9
        exposed_ns = exposed * comm_ns
        saving = max(0.0, min(fewer_ns * exposed, exposed_ns - claimed))
        dtype = ctx.run.sql("SELECT mode(dtype) FROM comms WHERE rank = ? AND collective = "
                            "'all_reduce'", [rank])[0][0]
        kernel = ctx.run.sql("""
            SELECT k.name FROM kernels k WHERE k.rank = ? AND k.kind = 'communication'
              AND k.name ILIKE '%allreduce%' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1""",
                             [rank]) if ctx.nonempty("kernels") else []
        kname = f" ({kernel[0][0].split('(')[0]})" if kernel else ""
        worst = max(steps, key=lambda r: int(r[2]))
        ddp = uses_ddp(ctx)  # DDP already buckets: its buckets are too small
        return [Finding(
            analyzer=self.name, kind="comm.unbucketed", key=f"rank{rank}",
            title=(f"Raise DistributedDataParallel's bucket_cap_mb: {n:.0f} all-reduces "
                   f"{ctx.per_step} of median {_size(size)}{kname}" if ddp else
                   f"Bucket the gradient all-reduces: {n:.0f} all-reduces {ctx.per_step} of "
                   f"median {_size(size)}{kname}, one per parameter"),
            saving_s=saving / 1e9, confidence="medium" if per_byte is not None else "low",
            explanation=(
                f"Rank {rank}, median over {len(steps)} steps: {n:.0f} all-reduces moving "
                f"{_size(total)} ({dtype or 'dtype unknown'}) in {comm_ns / 1e6:.2f} ms. Each "
                f"pays a fixed cost of about {alpha / 1e3:.1f} us "
                + ("(intercept of duration against bytes over this rank's all-reduces)"
                   if per_byte is not None else "(half the median duration: sizes too alike "
                   "to fit)")
                + f"; in {k} bucket(s) of 25 MiB the same bytes need {k} all-reduce(s), "
                f"{fewer_ns / 1e6:.2f} ms less communication. {exposed:.0%} of communication "
                f"is exposed (not hidden by compute)"
                + (f" and other findings claim {claimed / 1e6:.2f} ms of it" if claimed else "")
                + f", so the step gets {saving / 1e6:.2f} ms shorter."),
            evidence=(Evidence(f"step {worst[1]}: {worst[2]} all-reduces, median "
                               f"{_size(float(worst[3]))}, {int(worst[5]) / 1e6:.2f} ms",
                               rank=rank, step=int(worst[1]), value=int(worst[2])),),
            fix=_FIX_DDP if ddp else _FIX,
            verify=f"dsprof run {ctx.target_command}" if ctx.target_command else "",
            data={"rank": rank, "per_step": n, "median_bytes": size, "bytes_per_step": total,
                  "alpha_us": alpha / 1e3, "buckets": k, "exposed_share": exposed,
                  "claimed_elsewhere_ms": claimed / 1e6})]

    @staticmethod
    def _exposed_share(ctx: Context, rank: int) -> float:
        rows = [o for o in comm_overlap(ctx.run.con, by_step=False) if o.rank == rank]
        if not rows or not rows[0].comm_ns:
            return 1.0
        return rows[0].exposed_ns / rows[0].comm_ns


def fixed_cost(ctx: Context, rank: int, collective: str) -> tuple[float, float | None]:
    """(fixed ns per ``collective``, ns per byte or None when the sizes cannot separate them),
    from a least-squares line through (bytes, duration) of the rank's collectives."""
    pts = np.array(ctx.run.sql(
        "SELECT in_bytes, dur_ns FROM comms WHERE rank = ? AND collective = ? "
        "AND in_bytes IS NOT NULL AND step IS NOT NULL", [rank, collective]), dtype=float)
    if len(pts) >= 3 and np.ptp(pts[:, 0]) > 0:
        slope, intercept = np.polyfit(pts[:, 0], pts[:, 1], 1)
        if slope >= 0 and intercept > 0:
            return float(intercept), float(slope)
    return float(np.median(pts[:, 1])) / 2, None


def _size(n: float) -> str:
    return fmt_bytes(n, 1)
