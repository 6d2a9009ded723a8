"""Communication-bound steps: exposed communication is a large share of the step.

Example:
    DDP on 8 GPUs, fp32 gradients: each step's all-reduces take 60 ms, 45 ms of which no
    compute overlaps; the step is 150 ms.
Pattern:
    median over (rank, step) of exposed communication (comm_overlap.py) is at least 10 % of
    the median step.
Algorithm:
    the part of the exposed time that is transfer, not waiting for a later rank (comm_skew.py),
    is assumed to scale with the bytes sent. Gradient compression hooks cut those bytes:
    bf16/fp16 compression halves fp32 all-reduces (saving half the exposed transfer time);
    PowerSGD of rank r sends (m + n) x r values instead of m x n for each 2-D gradient
    (computed from the DDP buckets' gradient shapes when the trace recorded them). The
    saving claimed is the bf16 one; the finding's data lists all three with the bytes each
    removes, and the bucket sizes (``bucket_cap_mb``) for the overlap side.

    Counted once: a DDP comm hook compresses all-reduces only, so the saving covers the
    all-reduce share of the communication time (never all_to_all or all_gather traffic), and
    only the exposed time that no finding made before it claims (``comm.poor_overlap``: the
    claimed-time ledger, ``claims.py``). Unknown sizes or dtypes are printed as unknown, never as 0.0 MiB, and sizes in the unit
    they read best in (``dsprof.units.fmt_bytes``: 12.0 KiB, not 0.0 MiB).
"""

from __future__ import annotations

import statistics

from dsprof.analyzers.claims import EXPOSED_COMM
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.comm.bandwidth import bandwidth_summary
from dsprof.metrics.comm.ddp_buckets import buckets
from dsprof.metrics.comm.overlap import comm_overlap
from dsprof.metrics.comm.skew import rank_skew
from dsprof.units import fmt_bytes

THRESHOLD = 0.10
POWERSGD_RANK = 4


class CommBoundAnalyzer(Analyzer):
    name = "comm_bound"
    requires = ("comms", "steps")
    claims = ((EXPOSED_COMM, ("comm.bound",)),)
    reads = (EXPOSED_COMM,)

    def run(self, ctx: Context) -> list[Finding]:
        con = ctx.run.con
        per_step = comm_overlap(con, by_step=True)
        if not per_step:
            return []
        step_ns = {(r, s): d for r, s, d in ctx.run.sql(
            "SELECT rank, step, dur_ns FROM steps WHERE dur_ns > 0")}
        shares = [(o, o.exposed_ns / step_ns[(o.rank, o.step)]) for o in per_step
                  if (o.rank, o.step) in step_ns]
        if not shares:
            return []
        exposed = statistics.median(o.exposed_ns for o, _ in shares)
        share = statistics.median(s for _, s in shares)
        if share < THRESHOLD:
            return []
        comm = statistics.median(o.comm_ns for o, _ in shares)
        # waiting for later ranks is not helped by sending fewer bytes
        waits = {s.rank: s.wait_ns / max(s.steps, 1) for s in rank_skew(con, ctx.meta)}
        transfer = statistics.median(
            max(o.exposed_ns - waits.get(o.rank, 0), 0) for o, _ in shares)
        ar = ctx.run.sql("""
            SELECT median(b), mode(dtype) FROM (
                SELECT rank, step, sum(in_bytes) AS b, mode(dtype) AS dtype FROM comms
                WHERE collective = 'all_reduce' AND step IS NOT NULL GROUP BY rank, step)""")
        ar_bytes, dtype = (int(ar[0][0]) if ar[0][0] else 0), ar[0][1]
        fp32 = str(dtype).lower() in ("float", "float32")
        options = self._options(ar_bytes, fp32, buckets(con))
        ar_share = self._all_reduce_share(ctx)
        claimed = ctx.claims.claimed_s(EXPOSED_COMM) * 1e9  # comm.poor_overlap's part
        left = max(transfer - claimed, 0.0)
        saving = 0.5 * left * ar_share / 1e9 if fp32 else 0.0
        worst = max(shares, key=lambda x: x[1])[0]
        bw = bandwidth_summary(con, ctx.meta)
        ar_bw = next((b for b in bw if b["collective"] == "all_reduce"), None)
        link = ""
        if ar_bw and ar_bw["busbw_weighted_gbps"]:
            link = (f"All-reduce bus bandwidth (total bytes over total time) "
                    f"{ar_bw['busbw_weighted_gbps']:.2f} GB/s")
            link += (f", {ar_bw['peak_pct']:.0f}% of {ar_bw['link']}'s nominal "
                     f"{ar_bw['peak_gbps']:.0f} GB/s. " if ar_bw["peak_pct"] is not None else ". ")
        bucket_list = sorted({(b.index, b.nbytes) for b in buckets(con) if b.nbytes})
        fix = ("from torch.distributed.algorithms.ddp_comm_hooks import default_hooks\n"
               "ddp_model.register_comm_hook(state=None, hook=default_hooks.bf16_compress_hook)\n"
               "# or PowerSGD (low-rank gradients, larger saving, approximate):\n"
               "# from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd\n"
               f"# state = psgd.PowerSGDState(process_group=None, "
               f"matrix_approximation_rank={POWERSGD_RANK}, start_powerSGD_iter=10)\n"
               "# ddp_model.register_comm_hook(state, psgd.powerSGD_hook)\n"
               "# and a smaller DistributedDataParallel(..., bucket_cap_mb=...) starts the first "
               "all-reduce earlier in backward")
        return [Finding(
            analyzer=self.name, kind="comm.bound", key="exposed communication",
            title=(f"Communication not hidden by compute is {share:.0%} {ctx.words.of_each_step}: "
                   + ("compress gradients to bf16 (halves all-reduce bytes)" if fp32 else
                      "overlap it with compute or send fewer bytes")),
            saving_s=saving, confidence="low" if waits else "medium",
            explanation=(
                f"Per rank and step (median): {comm / 1e6:.1f} ms of communication, "
                f"{exposed / 1e6:.1f} ms of it exposed ({share:.0%} {ctx.words.of_the_step}), "
                f"{transfer / 1e6:.1f} ms of that transfer rather than waiting for other ranks. "
                + (f"All-reduces move {fmt_bytes(ar_bytes, 1)} {ctx.per_step} "
                   f"({dtype or 'dtype unknown'}). "
                   if ar_bytes else "All-reduce sizes are unknown (the trace records none). ")
                + f"{link}"
                + (f"All-reduces are {ar_share:.0%} of the communication time; a comm hook "
                   "compresses only them. " if ar_share < 1 else "")
                + (f"The poor-overlap finding already claims {claimed / 1e6:.1f} ms of the "
                   "exposed time; compression is priced on the rest. " if claimed else "")
                + (f"bf16 compression sends half of it ({fmt_bytes(ar_bytes / 2, 1)} less), "
                   f"saving about {saving * 1e3:.1f} ms {ctx.per_step} if transfer time follows "
                   "bytes. " if fp32 else "")
                + (f"PowerSGD rank {POWERSGD_RANK} would send "
                   f"{fmt_bytes(options['powersgd_bytes'])}. "
                   if options.get("powersgd_bytes") is not None else "")),
            evidence=(Evidence(f"rank {worst.rank} step {worst.step}: {worst.comm_ns / 1e6:.1f} "
                               f"ms communication, {worst.exposed_ns / 1e6:.1f} ms exposed "
                               f"({worst.overlap_pct:.0f}% overlapped)",
                               rank=worst.rank, step=worst.step, value=worst.exposed_ns / 1e9),),
            fix=fix,
            verify=(f"dsprof run --nproc-per-node {ctx.meta.get('world_size') or 2} "
                    f"{ctx.target_command}") if ctx.target_command else "",
            data={"per_rank_step": [{"rank": o.rank, "step": o.step, "comm_ns": o.comm_ns,
                                     "exposed_ns": o.exposed_ns,
                                     "overlap_pct": round(o.overlap_pct, 2)}
                                    for o, _ in shares],
                  "options": options, "buckets_bytes": [b for _, b in bucket_list],
                  "bandwidth": bw},
        )]

    @staticmethod
    def _all_reduce_share(ctx: Context) -> float:
        """All-reduce time over all collective time (what a DDP comm hook can compress)."""
        ar, total = ctx.run.sql("""SELECT sum(dur_ns) FILTER (WHERE collective = 'all_reduce'),
                                          sum(dur_ns) FROM comms WHERE step IS NOT NULL""")[0]
        return float(ar or 0) / float(total) if total else 0.0

    @staticmethod
    def _options(ar_bytes: int, fp32: bool, bucket_list) -> dict:
        """Bytes each remedy sends per step (per rank), from the all-reduce volume and, for
        PowerSGD, the gradient shapes of one rank's step."""
        out: dict = {"allreduce_bytes": ar_bytes,
                     "bf16_bytes": ar_bytes // 2 if fp32 else None,
                     "fp16_bytes": ar_bytes // 2 if fp32 else None,
                     "powersgd_bytes": None}
        if bucket_list:
            first = (bucket_list[0].rank, bucket_list[0].step)
            shapes = [s for b in bucket_list if (b.rank, b.step) == first for s in b.grad_shapes]
            if shapes:
                elems = 0
                for s in shapes:
                    if len(s) >= 2:
                        m, n = s[0], 1
                        for d in s[1:]:
                            n *= d
                        elems += min(m * n, (m + n) * POWERSGD_RANK)
                    else:
                        n = 1
                        for d in s:
                            n *= d
                        elems += n
                out["powersgd_bytes"] = elems * 4
        return out
