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
    removes, and the bucket sizes (``bucket_cap_mb``) for the overlap side. The switches are
    named as the loop that built the DDP model takes them (``comm_switches.py``: the script's
    ``ddp_model``, or the Lightning Trainer's ``DDPStrategy``), the hook as the backend
    accepts it (fp16 over gloo, which refuses the bf16 hook).

    Counted once: a DDP comm hook compresses all-reduces only, so the saving covers the
    all-reduce share of the communication time (never all_to_all or all_gather traffic), and
    only the exposed time that no finding made before it claims (``comm.poor_overlap``: the
    claimed-time ledger, ``claims.py``). Unknown sizes or dtypes are printed as unknown, never as 0.0 MiB, and sizes in the unit
    they read best in (``dsprof.units.fmt_bytes``: 12.0 KiB, not 0.0 MiB).

    A pipeline's send/recv (over half the communication time) is its stages waiting for each
    other, not gradients to compress: that finding is the schedule's (``pipeline_comm.py``).
"""

from __future__ import annotations

import statistics

from dsprof.analyzers.claims import EXPOSED_COMM
from dsprof.analyzers.comm_overlap import SPLITTABLE_BYTES
from dsprof.analyzers.comm_switches import (
    POWERSGD_RANK,
    bucket_line,
    compress_fix,
    half_dtype,
    sync_less_fix,
)
from dsprof.analyzers.frameworks import fsdp_version, tensor_parallel
from dsprof.analyzers.pipeline_comm import PIPELINE_FIX, p2p_share, pipeline_explanation
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.comm.bandwidth import bandwidth_summary
from dsprof.metrics.comm.ddp_buckets import buckets
from dsprof.metrics.comm.overlap import Overlap, comm_overlap
from dsprof.metrics.comm.skew import rank_skew
from dsprof.units import fmt_bytes, fmt_rate

THRESHOLD = 0.10
# The slowest link a data-parallel job's gradients plausibly cross: 100 MB/s, under 1 GbE's
# ~117 MB/s of payload (10 GbE, PCIe, NVLink, InfiniBand and a host's loopback are faster). A
# ring all-reduce sends and receives about twice its buffer, so its bytes cannot take longer
# than 2 x bytes at this rate; exposed time beyond that is latency or waiting, which
# compressing the bytes does not cut. (hta_cpu_only_gloo, rank 34 of a 300-rank gloo job:
# 9.2 MiB a step in 178.8 ms, which 1 GbE could explain: compression stays priced there.)
SLOWEST_LINK_BPS = 1e8
# Exposed all-reduce transfer this many times what its bytes can take is latency-bound: the
# fix is fewer all-reduces (sync every k micro-batches, a larger batch per rank), not fewer
# bytes. (A 2-rank gloo DDP run on CPU: 25.5 KiB a step, 3.2 ms exposed "transfer"; bf16
# would save at most 0.26 ms of it even over 1 GbE, not the 1.6 ms a bytes-proportional
# model claimed.)
LATENCY_BOUND_X = 4


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
        if p2p_share(ctx) > 0.5:
            return [self._pipeline(ctx, shares, comm, exposed, share)]
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
        ar_transfer = left * ar_share
        bytes_ns = 2 * ar_bytes / SLOWEST_LINK_BPS * 1e9 if ar_bytes else None
        # what the transfer is (latency or bytes) does not depend on who claims it
        latency_bound = (bytes_ns is not None
                         and transfer * ar_share > LATENCY_BOUND_X * bytes_ns)
        compressible = ar_transfer if bytes_ns is None else min(ar_transfer, bytes_ns)
        saving = 0.0 if latency_bound or not fp32 else 0.5 * compressible / 1e9
        worst = max(shares, key=lambda x: x[1])[0]
        bw = bandwidth_summary(con, ctx.meta)
        ar_bw = next((b for b in bw if b["collective"] == "all_reduce"), None)
        link = ""
        if ar_bw and ar_bw["busbw_weighted_gbps"]:
            link = (f"All-reduce bus bandwidth (total bytes over total time) "
                    f"{fmt_rate(ar_bw['busbw_weighted_gbps'])}")
            link += (f", {ar_bw['peak_pct']:.0f}% of {ar_bw['link']}'s nominal "
                     f"{ar_bw['peak_gbps']:.0f} GB/s. " if ar_bw["peak_pct"] is not None else ". ")
        bucket_list = sorted({(b.index, b.nbytes) for b in buckets(con) if b.nbytes})
        fix = compress_fix(ctx)
        if ar_bytes > SPLITTABLE_BYTES:
            # up to DDP's 1 MiB first bucket the gradients are one bucket whatever
            # bucket_cap_mb says (a 342 KiB model on 2 gloo ranks was told to lower it)
            fix += bucket_line(ctx)
        latency = ""
        fsdp = fsdp_version(ctx)
        if fsdp is not None:
            # FSDP: no DDP comm hook, no buckets, no no_sync() (FSDP2); its own switches
            fix = _FSDP_FEWER if latency_bound else _FSDP_REDUCE_BF16[fsdp]
            if latency_bound:
                fix = fix[fsdp]
            options["powersgd_bytes"] = None  # a DDP comm hook: FSDP has none
        tp = fsdp is None and tensor_parallel(ctx)
        if tp:
            # activations' all-reduces in forward and backward: no gradient sync to compress,
            # delay or bucket; the remedy changes the parallel layout, which is not priced
            fix, saving = _TP_LAYOUT, 0.0
            options["powersgd_bytes"] = None
            latency = (
                "The all-reduces are tensor parallelism's (DTensor's functional collectives: "
                "a RowwiseParallel layer's output in forward, a ColwiseParallel layer's input "
                "gradient in backward), not a gradient sync: DDP's comm hooks, buckets and "
                "no_sync() do not apply, and accumulating micro-batches does not cut them "
                "(every forward and backward runs them). "
                + (f"They are latency, not bytes: {fmt_bytes(ar_bytes, 1)} {ctx.per_step} "
                   f"cross even a {SLOWEST_LINK_BPS / 1e6:.0f} MB/s link in "
                   f"{(bytes_ns or 0) / 1e6:.3f} ms, against "
                   f"{transfer * ar_share / 1e6:.1f} ms exposed. " if latency_bound else "")
                + "No saving is predicted: the remedy is a different split of the model. ")
        elif latency_bound and fsdp is not None:
            latency = (
                f"That is latency, not bytes: {fmt_bytes(ar_bytes, 1)} of gradient reduction "
                f"{ctx.words.a_step} cross even a {SLOWEST_LINK_BPS / 1e6:.0f} MB/s link in "
                f"{(bytes_ns or 0) / 1e6:.3f} ms, against {transfer * ar_share / 1e6:.1f} ms "
                "exposed; reducing in bf16 would save at most "
                f"{0.5 * (bytes_ns or 0) / 1e6:.3f} ms. Fewer, larger collectives cut it: "
                "shard larger units (each block, not each layer), keep the parameters "
                "gathered from forward to backward (no all-gather in backward, more memory), "
                "or reduce gradients every k micro-batches; no saving is predicted, since "
                "these trade memory or change the batch the optimizer sees. ")
        elif latency_bound:
            micro = _micro_batches(ctx)
            fix = sync_less_fix(ctx, micro)
            latency = (f"{micro} forward passes of DistributedDataParallel a step: the script "
                       "already accumulates gradients. " if micro > 1 else "")
            latency += (
                f"That is latency, not bytes: {fmt_bytes(ar_bytes, 1)} of all-reduce "
                f"{ctx.words.a_step} cross even a {SLOWEST_LINK_BPS / 1e6:.0f} MB/s link in "
                f"{(bytes_ns or 0) / 1e6:.3f} ms, against {transfer * ar_share / 1e6:.1f} ms "
                "exposed; "
                "compressing the bytes (bf16, PowerSGD) would save at most "
                f"{0.5 * (bytes_ns or 0) / 1e6:.3f} ms. Fewer all-reduces cut it: syncing "
                "every k micro-batches (DDP's no_sync) or a larger batch per rank (more "
                "compute per all-reduce); no saving is predicted, since either changes the "
                "batch the optimizer sees. ")
        return [Finding(
            analyzer=self.name, kind="comm.bound", key="exposed communication",
            title=(f"Communication not hidden by compute is {share:.0%} {ctx.words.of_each_step}: "
                   + ("tensor parallelism's all-reduces, in every forward and backward"
                      if tp else
                      "latency, not bytes: fewer, larger FSDP collectives"
                      if latency_bound and fsdp is not None else
                      "latency, not bytes: all-reduce less often" if latency_bound else
                      "reduce gradients in bf16 (FSDP's reduce_dtype)"
                      if fp32 and fsdp is not None else
                      f"compress gradients to {half_dtype(ctx)} (halves all-reduce bytes)"
                      if fp32 else
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
                + (f"All-reduces are {ar_share:.0%} of the communication time; "
                   + ("FSDP's reduce_dtype compresses only the gradient reductions. "
                      if fsdp is not None else "a comm hook compresses only them. ")
                   if ar_share < 1 and not tp else "")
                + (f"The model is sharded with FSDP{fsdp} "
                   + ("(fully_shard)" if fsdp == 2 else "(FullyShardedDataParallel)")
                   + ": the fix uses its switches, not DDP's. " if fsdp is not None else "")
                + (f"The poor-overlap finding already claims {claimed / 1e6:.1f} ms of the "
                   "exposed time; compression is priced on the rest. " if claimed else "")
                + latency
                + (f"{half_dtype(ctx)} compression sends half of it "
                   f"({fmt_bytes(ar_bytes / 2, 1)} less), "
                   f"saving about {saving * 1e3:.1f} ms {ctx.per_step} if transfer time follows "
                   "bytes. " if fp32 and not latency_bound and not tp else "")
                + (f"PowerSGD rank {POWERSGD_RANK} would send "
                   f"{fmt_bytes(options['powersgd_bytes'])}. "
                   if options.get("powersgd_bytes") is not None else "")),
            evidence=(Evidence(f"rank {worst.rank} step {worst.step}: {worst.comm_ns / 1e6:.1f} "
                               f"ms communication, {worst.exposed_ns / 1e6:.1f} ms exposed "
                               f"({worst.overlap_pct:.0f}% overlapped)",
                               rank=worst.rank, step=worst.step, value=worst.exposed_ns / 1e9),),
            fix=fix,
            verify=ctx.ranks_command or "",
            data={"per_rank_step": [{"rank": o.rank, "step": o.step, "comm_ns": o.comm_ns,
                                     "exposed_ns": o.exposed_ns,
                                     "overlap_pct": round(o.overlap_pct, 2)}
                                    for o, _ in shares],
                  "options": options, "buckets_bytes": [b for _, b in bucket_list],
                  "latency_bound": latency_bound,
                  "bytes_ms_at_slowest_link": None if bytes_ns is None else bytes_ns / 1e6,
                  "bandwidth": bw},
        )]

    def _pipeline(self, ctx: Context, shares: list[tuple[Overlap, float]], comm: float,
                  exposed: float, share: float) -> Finding:
        """Mostly send/recv between stages: a pipeline's bubble, with the schedule's switches
        (``pipeline_comm.py``); no DDP advice, no saving."""
        worst = max(shares, key=lambda x: x[1])[0]
        return Finding(
            analyzer=self.name, kind="comm.bound", key="exposed communication",
            title=(f"Pipeline stages wait for each other {share:.0%} {ctx.words.of_each_step}: "
                   "more micro-batches or an interleaved schedule"),
            saving_s=0.0, confidence="medium",
            explanation=pipeline_explanation(ctx, comm, exposed, share),
            evidence=(Evidence(f"rank {worst.rank} step {worst.step}: {worst.comm_ns / 1e6:.1f} "
                               f"ms in send/recv, {worst.exposed_ns / 1e6:.1f} ms exposed",
                               rank=worst.rank, step=worst.step, value=worst.exposed_ns / 1e9),),
            fix=PIPELINE_FIX,
            verify=ctx.ranks_command or "",
            data={"per_rank_step": [{"rank": o.rank, "step": o.step, "comm_ns": o.comm_ns,
                                     "exposed_ns": o.exposed_ns} for o, _ in shares],
                  "pipeline": True})

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


# FSDP's own switches (torch.distributed.fsdp): FSDP2 (fully_shard) and FSDP1
# (FullyShardedDataParallel) name them differently.
_FSDP_FEWER = {
    2: ("# FSDP2: the collectives are latency, not bytes: fewer, larger ones\n"
        "# shard larger units (each block, not each layer), then the root:\n"
        "for block in model.blocks:\n"
        "    fully_shard(block)\n"
        "fully_shard(model)\n"
        "# or keep parameters gathered from forward to backward (no all-gather in backward):\n"
        "# fully_shard(block, reshard_after_forward=False)\n"
        "# or reduce gradients every k micro-batches:\n"
        "# model.set_requires_gradient_sync((i + 1) % k == 0)"),
    1: ("# FSDP: the collectives are latency, not bytes: fewer, larger ones\n"
        "# wrap larger units (auto_wrap_policy on the block class, not each layer):\n"
        "from torch.distributed.fsdp.wrap import ModuleWrapPolicy\n"
        "model = FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy({Block}))\n"
        "# or keep parameters gathered from forward to backward:\n"
        "# FullyShardedDataParallel(..., sharding_strategy=ShardingStrategy.SHARD_GRAD_OP)\n"
        "# or reduce gradients every k micro-batches: with model.no_sync(): ..."),
}
_FSDP_REDUCE_BF16 = {
    2: ("from torch.distributed.fsdp import MixedPrecisionPolicy\n"
        "fully_shard(block, mp_policy=MixedPrecisionPolicy(reduce_dtype=torch.bfloat16))"),
    1: ("from torch.distributed.fsdp import MixedPrecision\n"
        "FullyShardedDataParallel(model, ..., "
        "mixed_precision=MixedPrecision(reduce_dtype=torch.bfloat16))"),
}

# Tensor parallelism (parallelize_module on a DeviceMesh): its all-reduces are the model's own
_TP_LAYOUT = (
    "# Tensor parallelism all-reduces activations in every parallelized block, forward and\n"
    "# backward: it pays where the link is fast (NVLink, within one node) and the layers are\n"
    "# too large for one device. Over a slower link, or for layers that fit one device:\n"
    "# shard fewer layers (or none) and use data parallelism, which moves the gradients once\n"
    "# a step: model = DistributedDataParallel(model) (or fully_shard(model))\n"
    "# across nodes, keep TP within a node and data parallelism across nodes (a 2-D mesh):\n"
    "mesh = init_device_mesh(\"cuda\", (num_nodes, gpus_per_node), mesh_dim_names=(\"dp\", \"tp\"))\n"
    "parallelize_module(block, mesh[\"tp\"], plan)  # for each block, as now\n"
    "fully_shard(model, mesh=mesh[\"dp\"])")


def _micro_batches(ctx: Context) -> int:
    """Forward passes of DistributedDataParallel in a profiled step (median; 1 when none is
    recorded): more than one means the script accumulates gradients over micro-batches."""
    if not ctx.run.has("ops"):
        return 1
    (n,), = ctx.run.sql("""
        SELECT median(n) FROM (SELECT rank, step, count(*) AS n FROM ops
                               WHERE name = 'DistributedDataParallel.forward'
                                 AND step IS NOT NULL GROUP BY rank, step)""")
    return max(int(n or 1), 1)
