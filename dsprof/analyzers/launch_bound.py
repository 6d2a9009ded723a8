"""Finding: the GPU waits for the CPU to launch many short kernels (launch-bound steps).

Example: a small transformer at batch 4 launches 900 kernels per step of 8 us median; between
them the GPU is idle while Python and the dispatcher issue the next launch.

Pattern: per rank, the union of all device activity (every stream) leaves gaps; a gap is
**host-bound** when the kernel that ends it was launched after the gap began (the GPU had nothing
queued: the CPU was late), as HTA's host_wait but over the whole device rather than one stream,
so a busy compute stream hides the waits of a side stream. The finding fires when host-bound
gaps are at least ``MIN_SHARE`` of the step and the median compute kernel is shorter than
``SHORT_KERNEL_NS`` (many short kernels: launch overhead, which CUDA graphs remove).

Algorithm: kernels of each rank in start order; ``prev_end`` = the latest end of any earlier
kernel; gap = start - prev_end when positive. A CUDA graph (``torch.compile(mode=
"reduce-overhead")`` or ``torch.cuda.graphs``) removes the launch calls, not the other host work
(syncs, Python, data loading), so the saving per step is the host-bound idle time capped by the
time the host spent in launch API calls (``cudaLaunchKernel``, ``cuLaunchKernel``,
``hipLaunchKernel``, ...) in those steps. When launch calls explain less than half of the idle
time, the finding says so and names the rest as other host work instead of prescribing CUDA
graphs alone. The GPU idle time that the findings before it claim (DataLoader wait, host
syncs: the claimed-time ledger, ``claims.py``) is subtracted from the step's idle time first,
so together they never claim more idle time than there is. The share is over the duration of
the steps the gaps were measured in, so it never exceeds 100 %. Ranks whose trace was down-sampled (``ingest_notes.sampled``) are left
out: the gaps between the events sampling kept are not idle time.
"""

from __future__ import annotations

from dsprof.analyzers.claims import GPU_IDLE
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding

MIN_SHARE = 0.05
SHORT_KERNEL_NS = 50_000

_FIX = """# whole step, static shapes:
model = torch.compile(model, mode="reduce-overhead")   # CUDA graphs under the hood
# or capture by hand:
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g):
    static_loss = train_step(static_x, static_y)
# each step: copy the batch into static_x/static_y, then g.replay()"""


def host_bound_gaps(con) -> list[tuple[int, int, int, int, int]]:
    """(rank, step, host-bound idle ns, all idle ns, gaps) per rank and step of the kernel
    that ends each gap."""
    return con.execute("""
        WITH ev AS (
            SELECT k.rank, k.step, k.start_ns, k.start_ns + greatest(k.dur_ns, 0) AS end_ns,
                   o.start_ns AS launch_ns
            FROM kernels k LEFT JOIN ops o ON o.rank = k.rank AND o.id = k.launch_id
            WHERE k.kind <> 'sync'),
        w AS (
            SELECT *, max(end_ns) OVER (PARTITION BY rank ORDER BY start_ns, end_ns
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                      AS prev_end
            FROM ev)
        SELECT rank, step,
               coalesce(sum(start_ns - prev_end) FILTER (WHERE launch_ns > prev_end), 0)::BIGINT,
               sum(start_ns - prev_end)::BIGINT, count(*)
        FROM w WHERE start_ns > prev_end AND step IS NOT NULL
        GROUP BY rank, step ORDER BY rank, step""").fetchall()


class LaunchBoundAnalyzer(Analyzer):
    name = "launch_bound"
    requires = ("kernels", "ops")
    claims = ((GPU_IDLE, ("launch.bound",)),)
    reads = (GPU_IDLE,)

    def skip_reason(self, ctx: Context) -> str | None:
        ranks = {int(r) for (r,) in ctx.run.sql("SELECT DISTINCT rank FROM kernels")}
        if ranks and ranks <= ctx.sampled_ranks:
            return ("every rank's trace was down-sampled (it keeps a few of the profiler's "
                    "events), so gaps between kept kernels are not launch waits")
        return None

    def run(self, ctx: Context) -> list[Finding]:
        self.no_finding_reason = (
            "the trace marks no steps (no ProfilerStep spans): host-bound idle time is a share "
            "of a step" if not ctx.nonempty("steps") else None)
        rows = [r for r in host_bound_gaps(ctx.run.con) if int(r[0]) not in ctx.sampled_ranks]
        if not rows:
            return []
        per_rank: dict[int, list[tuple[int, int, int, int]]] = {}
        for rank, step, host, idle, gaps in rows:
            per_rank.setdefault(rank, []).append((step, host, idle, gaps))
        rank, steps = max(per_rank.items(),
                          key=lambda kv: sum(h for _, h, _, _ in kv[1]) / len(kv[1]))
        host_per_step = sum(h for _, h, _, _ in steps) / len(steps) / 1e9
        step_s = self._measured_step_s(ctx, rank, [s for s, _, _, _ in steps]) \
            or ctx.step_s or self._step_from_kernels(ctx, rank)
        median_ns, kernels_per_step = ctx.run.sql("""
            SELECT median(dur_ns), count(*) / greatest(count(DISTINCT step), 1) FROM kernels
            WHERE kind = 'compute' AND rank = ? AND step IS NOT NULL""", [rank])[0]
        if not step_s or median_ns is None:
            return []
        share = min(host_per_step / step_s, 1.0)
        if share < MIN_SHARE or median_ns >= SHORT_KERNEL_NS:
            return []
        launch_s = self._launch_api_s(ctx, rank, [s for s, _, _, _ in steps])
        saving = min(host_per_step, launch_s) if launch_s is not None else host_per_step
        # GPU idle time the findings before this one claim (a DataLoader wait, syncs): the
        # launch saving is what is left of the idle time, at most (claims.py)
        idle_per_step = sum(i for _, _, i, _ in steps) / len(steps) / 1e9
        claimed = ctx.claims.claimed_s(GPU_IDLE, rank)
        saving = max(0.0, min(saving, idle_per_step - claimed))
        if saving <= 0:
            return []
        other = host_per_step - min(host_per_step, launch_s if launch_s is not None
                                    else host_per_step)
        worst = max(steps, key=lambda s: s[1])
        mostly_launches = launch_s is None or launch_s >= 0.5 * host_per_step
        words = ctx.words
        title = (f"Capture the step in a CUDA graph: the GPU waits on kernel launches "
                 f"{100 * share:.0f}% {words.of_each_step}" if mostly_launches else
                 f"The GPU waits for the host {100 * share:.0f}% {words.of_each_step}, but kernel "
                 f"launches take only {(launch_s or 0.0) * 1e3:.2f} ms of it: the rest is "
                 "other host work")
        launch_txt = ("" if launch_s is None else
                      f" Launch API calls take {launch_s * 1e3:.2f} ms of host time "
                      f"{words.per_step}: "
                      f"that is what a CUDA graph removes; {other * 1e3:.2f} ms of the idle "
                      "time is other host work (syncs, Python, data loading; see the host-sync "
                      "findings), which a graph does not remove.")
        who = ", ".join(sorted({c.claimed_by.split(":")[0] for c in ctx.claims.by(GPU_IDLE)
                                if c.rank in (None, rank)}))
        claimed_txt = (f" Other findings ({who}) claim {claimed * 1e3:.2f} ms of the "
                       f"{idle_per_step * 1e3:.2f} ms of GPU idle time {words.per_step}; the "
                       f"saving is at most what is left: {saving * 1e3:.2f} ms." if claimed else
                       f" The saving: {saving * 1e3:.2f} ms {words.per_step}.")
        return [Finding(
            analyzer=self.name, kind="launch.bound", key="launch_bound",
            title=title,
            saving_s=saving, confidence="medium" if mostly_launches else "low",
            explanation=(f"Rank {rank}: {kernels_per_step:.0f} kernels {words.per_step}, "
                         f"median {median_ns / 1e3:.1f} us; the GPU sat idle with nothing queued "
                         f"for {host_per_step * 1e3:.2f} ms {words.per_step} "
                         f"({100 * share:.0f}% of a "
                         f"{step_s * 1e3:.1f} ms step) waiting for the CPU to launch the next "
                         f"kernel.{launch_txt}{claimed_txt}"),
            evidence=(Evidence(text=(f"step {worst[0]}: {worst[1] / 1e6:.2f} ms host-bound idle "
                                     f"in {worst[3]} gaps"), rank=rank, step=worst[0],
                               value=worst[1] / 1e9),),
            fix=_FIX,
            verify=f"dsprof run {ctx.target_command}" if ctx.target_command else "",
            data={"rank": rank, "host_bound_ms_per_step": host_per_step * 1e3,
                  "launch_api_ms_per_step": None if launch_s is None else launch_s * 1e3,
                  "claimed_elsewhere_ms": claimed * 1e3,
                  "share": share,
                  "median_kernel_us": median_ns / 1e3, "kernels_per_step": kernels_per_step})]

    @staticmethod
    def _measured_step_s(ctx: Context, rank: int, steps: list[int]) -> float | None:
        """Mean duration of the steps the gaps were measured in (one step number may hold
        two spans in an odd trace: their durations add, as their gaps do)."""
        if not ctx.run.has("steps"):
            return None
        v = ctx.run.sql("SELECT sum(dur_ns) FROM steps WHERE rank = ? AND step IN "
                        "(SELECT unnest(?::BIGINT[]))", [rank, steps])[0][0]
        return float(v) / len(steps) / 1e9 if v else None

    @staticmethod
    def _launch_api_s(ctx: Context, rank: int, steps: list[int]) -> float | None:
        """Host seconds per step inside kernel-launch API calls, or None when the trace
        records no runtime calls."""
        total, n = ctx.run.sql("""
            SELECT sum(dur_ns) FILTER (WHERE name IN ('cudaLaunchKernel', 'cuLaunchKernel',
                       'cudaLaunchKernelExC', 'cuLaunchKernelEx', 'hipLaunchKernel',
                       'hipExtModuleLaunchKernel', 'hipModuleLaunchKernel',
                       'cudaLaunchCooperativeKernel')),
                   count(*) FILTER (WHERE cat IN ('cuda_runtime', 'cuda_driver', 'Runtime'))
            FROM ops WHERE rank = ? AND step IN (SELECT unnest(?::BIGINT[]))""",
                                   [rank, steps])[0]
        if not n:
            return None
        return float(total or 0) / len(steps) / 1e9

    @staticmethod
    def _step_from_kernels(ctx: Context, rank: int) -> float | None:
        value = ctx.run.sql("""
            SELECT median(span) FROM (
                SELECT max(start_ns + dur_ns) - min(start_ns) AS span FROM kernels
                WHERE rank = ? AND step IS NOT NULL GROUP BY step)""", [rank])[0][0]
        return None if value is None else float(value) / 1e9
