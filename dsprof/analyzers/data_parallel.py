"""``nn.DataParallel`` -> ``DistributedDataParallel``.

Example:
    ``model = nn.DataParallel(model)``: one process drives every GPU; each step it replicates
    the model, scatters the batch, gathers the outputs on GPU 0 and sums the gradients there,
    all under one GIL.
Pattern:
    a module span named ``DataParallel`` (dsprof's module annotation of the wrapper, or the
    Python tracer's ``nn.Module: DataParallel_0``). ``DistributedDataParallel`` never matches:
    the advice only goes from DataParallel to DDP.
Algorithm:
    the wrapper's own time per step (its span minus the wrapped module's), the replication,
    scatter and gather that DDP does not do, is the saving; low confidence, as DDP's own
    all-reduce cost is not known before it runs.
"""

from __future__ import annotations

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding


class DataParallelAnalyzer(Analyzer):
    name = "data_parallel"
    requires = ("ops",)

    def run(self, ctx: Context) -> list[Finding]:
        rows = ctx.run.sql("""
            WITH dp AS (
                SELECT rank, step, id, start_ns, dur_ns FROM ops
                WHERE cat = 'module'
                  AND regexp_matches(name, '(^|\\.)DataParallel(_[0-9]+)?$')),
            inner_ AS (
                SELECT o.rank, o.parent_id AS id, sum(o.dur_ns) AS inner_ns FROM ops o
                JOIN dp ON dp.rank = o.rank AND o.parent_id = dp.id
                WHERE o.cat = 'module' GROUP BY o.rank, o.parent_id)
            SELECT count(*), count(DISTINCT (dp.rank, dp.step)),
                   sum(dp.dur_ns - coalesce(i.inner_ns, 0)), min(dp.rank), min(dp.step)
            FROM dp LEFT JOIN inner_ i USING (rank, id)""")
        calls, steps, overhead, rank, step = rows[0]
        if not calls:
            return []
        saving = (overhead or 0) / max(steps or 1, 1) / 1e9
        return [Finding(
            analyzer=self.name, kind="comm.data_parallel", key="nn.DataParallel",
            title="Replace nn.DataParallel with DistributedDataParallel",
            saving_s=max(saving, 0.0), confidence="low",
            explanation=(
                f"The model runs under nn.DataParallel ({calls} forward calls). DataParallel "
                "replicates the model, scatters inputs and gathers outputs on one device every "
                "step from a single process; DistributedDataParallel runs one process per "
                "device and overlaps gradient all-reduce with backward. PyTorch recommends DDP "
                f"even on one machine. The wrapper's own time was {saving * 1e3:.1f} ms "
                f"{ctx.per_step}."),
            evidence=(Evidence("module span DataParallel", rank=rank, step=step),),
            fix=("# launch with: torchrun --nproc-per-node NUM_GPUS train.py\n"
                 "import os, torch, torch.distributed as dist\n"
                 "dist.init_process_group('nccl')\n"
                 "local_rank = int(os.environ['LOCAL_RANK'])\n"
                 "torch.cuda.set_device(local_rank)\n"
                 "model = torch.nn.parallel.DistributedDataParallel(model.cuda(local_rank), "
                 "device_ids=[local_rank])\n"
                 "# and a DistributedSampler for the DataLoader"),
            verify=("dsprof run --nproc-per-node NUM_GPUS "
                    f"{ctx.target_command}") if ctx.target_command else "",
        )]
