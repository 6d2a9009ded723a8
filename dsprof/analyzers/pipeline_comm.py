"""Exposed communication of a pipeline-parallel run: what ``comm_bound`` says instead of DDP's
advice when the time is point-to-point transfers between stages.

A stage of ``torch.distributed.pipelining`` (or a hand-written send/recv pipeline) receives its
input activations from the previous stage and its output gradients from the next one; while
it waits for them it is idle. Most of that wait is the schedule's bubble: with S stages and M
micro-batches, GPipe and 1F1B leave each stage idle (S - 1) / (M + S - 1) of a step (Narayanan
et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters"); the rest is the
stages' imbalance (the slowest stage sets the pace) and the transfer itself. The bytes are
activations, not gradients to reduce: a DDP comm hook, buckets and ``no_sync()`` do not apply.
The remedies are the schedule's: more micro-batches, several stages per rank (an interleaved
schedule), a zero-bubble schedule, balanced stages. None is priced: more micro-batches change
each one's batch, and the interleaved and zero-bubble schedules need the model split anew.
"""

from __future__ import annotations

from dsprof.analyzers.registry import Context
from dsprof.units import fmt_bytes

P2P = ("send", "recv")

PIPELINE_FIX = (
    "# torch.distributed.pipelining: the stages wait for each other (the schedule's bubble).\n"
    "# More micro-batches a step shrink it, (S - 1) / (M + S - 1) of the step idle per stage:\n"
    "schedule = Schedule1F1B(stage, n_microbatches=4 * num_stages, loss_fn=loss_fn)\n"
    "# or several stages per rank, interleaved (the bubble divided by stages per rank):\n"
    "# stages = [PipelineStage(chunk, stage_index=rank + i * world_size,\n"
    "#                         num_stages=len(chunks) * world_size, device=device)\n"
    "#           for i, chunk in enumerate(chunks)]\n"
    "# schedule = ScheduleInterleaved1F1B(stages, n_microbatches=M, loss_fn=loss_fn)\n"
    "# or a zero-bubble schedule: ScheduleInterleavedZeroBubble(stages, n_microbatches=M, ...)\n"
    "# and balance the split: the slowest stage sets every stage's pace")


def p2p_share(ctx: Context) -> float:
    """Point-to-point (send, recv) time over all communication time in the steps: above one
    half, the run's communication is a pipeline's (or another send/recv scheme's)."""
    p2p, total = ctx.run.sql("""
        SELECT sum(dur_ns) FILTER (WHERE collective IN ('send', 'recv')), sum(dur_ns)
        FROM comms WHERE step IS NOT NULL""")[0]
    return float(p2p or 0) / float(total) if total else 0.0


def pipeline_shape(ctx: Context) -> tuple[int, int]:
    """(stages, micro-batches): the ranks that send or receive, and the fewest sends a rank
    makes a step (median over its steps): a first or last stage sends one tensor per
    micro-batch (activations forward, or gradients back), a middle stage two."""
    rows = ctx.run.sql("""
        SELECT rank, median(n) FROM (
            SELECT rank, step, count(*) FILTER (WHERE collective = 'send') AS n FROM comms
            WHERE step IS NOT NULL AND collective IN ('send', 'recv') GROUP BY rank, step)
        GROUP BY rank""")
    if not rows:
        return 0, 0
    return len(rows), int(min(n for _, n in rows) or 0)


def pipeline_explanation(ctx: Context, comm_ns: float, exposed_ns: float, share: float) -> str:
    """Why the exposed time is the pipeline's, with the schedule's own bubble for comparison."""
    stages, micro = pipeline_shape(ctx)
    (nbytes,), = ctx.run.sql("""
        SELECT median(b) FROM (SELECT rank, step, sum(in_bytes) AS b FROM comms
                               WHERE step IS NOT NULL AND collective = 'send'
                               GROUP BY rank, step)""")
    text = (f"Per rank and step (median): {comm_ns / 1e6:.1f} ms in send/recv between pipeline "
            f"stages, {exposed_ns / 1e6:.1f} ms of it exposed ({share:.0%} of the step). "
            "A stage waits there for the previous stage's activations or the next one's "
            "gradients: the schedule's bubble and the stages' imbalance, not a gradient sync "
            "(DDP's comm hooks, buckets and no_sync() do not apply). ")
    if nbytes:
        text += f"A rank sends {fmt_bytes(int(nbytes), 1)} {ctx.per_step}. "
    if stages >= 2 and micro >= 1:
        bubble = (stages - 1) / (micro + stages - 1)
        text += (f"{stages} ranks pass tensors and the fewest sends a rank makes {ctx.words.a_step} "
                 f"is {micro} (a first or last stage sends one per micro-batch): with {micro} "
                 f"micro-batches GPipe and 1F1B leave each stage idle {bubble:.0%} of the step; "
                 "a wait beyond that is imbalance between the stages, the transfer, or ranks "
                 "sharing CPU cores. ")
    return text + ("No saving is predicted: more micro-batches change each one's size, and "
                   "interleaved or zero-bubble schedules need the model split anew. ")
