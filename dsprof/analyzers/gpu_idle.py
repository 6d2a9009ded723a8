"""Finding: a whole-GPU idle block in every step that no other finding explains.

Example:
    ResNet-50 with a single-process DataLoader (``kineto_resnet50_v100_autograd``): each
    iteration the GPU finishes its kernels and then does nothing for ~50 ms while the training
    process decodes and collates the next batch itself.

Pattern:
    Per rank and step (``metrics.gpu.idle_blocks``): the stretches of at least 1 ms in which no
    stream of the device runs anything, and what the host was doing meanwhile: loading data,
    blocked in or just back from a sync, launching kernels, running other CPU ops (Python and
    framework work), or nothing the trace recorded ("unexplained"). A trace that marks no steps
    is cut into iterations at each batch fetch. Preconditions: a GPU trace with at least two
    iterations, not down-sampled (gaps between the events a sampled trace kept are not idle
    time: ``ingest_notes.sampled``), and idle blocks of at least ``MIN_SHARE`` of the step.

Algorithm:
    The time this finding claims is the idle time during data loading, other host ops and
    nothing at all; sync and launch time belong to ``host_sync`` and ``launch.bound``. The
    GPU idle time the findings made before it claim (``input.*``, ``host_sync.*``,
    ``launch.bound``: the claimed-time ledger, ``claims.py``) is subtracted first, so the
    findings together never claim more idle time than there is: the saving is
    ``min(own, idle - claimed)``. It fires when that is at least
    ``MIN_OWN_SHARE`` of the step; its title names what dominates and, when nothing recorded
    explains the idle time, says so with where in the step the largest block sits.
"""

from __future__ import annotations

import statistics

from dsprof.analyzers.claims import GPU_IDLE
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.gpu.idle_blocks import MIN_BLOCK_NS, IdleBlocks, idle_blocks

MIN_SHARE = 0.10
MIN_OWN_SHARE = 0.05
OWN = ("data", "host", "unexplained")

_FIX = {
    "data": ("loader = DataLoader(dataset, batch_size=..., num_workers=4,\n"
             "                    persistent_workers=True, pin_memory=True)\n"
             "# batches are loaded by worker processes while the GPU runs the current step"),
    "host": ("# The host runs these ops while the GPU has nothing queued. Cut the CPU work per\n"
             "# step (fewer, larger ops; torch.compile(model) removes Python and dispatcher\n"
             "# overhead), or move it off the step (metrics/logging every N steps)."),
    "unexplained": ("# The trace records nothing on the host while the GPU idles: profile with\n"
                    "# with_stack=True (or py-spy) to see the Python between ops, and check\n"
                    "# that the process is not waiting on I/O or off the CPU."),
}


class GpuIdleAnalyzer(Analyzer):
    name = "gpu_idle"
    requires = ("kernels", "ops")
    claims = ((GPU_IDLE, ("gpu.idle_block",)),)
    reads = (GPU_IDLE,)

    def skip_reason(self, ctx: Context) -> str | None:
        if self._ranks(ctx):
            return None
        return ("every rank's trace was down-sampled (it keeps a few of the profiler's events), "
                "so gaps between kept events are not GPU idle time")

    def run(self, ctx: Context) -> list[Finding]:
        self.no_finding_reason = None
        found = [b for r in self._ranks(ctx) if (b := idle_blocks(ctx.run.con, r)) is not None
                 and b.iterations]
        if not found:
            self.no_finding_reason = ("fewer than two iterations to measure: one step, or no "
                                      "steps and no DataLoader or optimizer spans to cut the "
                                      "trace at")
            return []
        b = max(found, key=lambda x: sum(x.by_class[c] for c in OWN) / len(x.iterations))
        n = len(b.iterations)
        step_ns = b.iteration_ns
        idle = b.per_iteration_ns
        if not step_ns or idle < MIN_SHARE * step_ns:
            return []
        own = sum(b.by_class[c] for c in OWN) / n
        # a trace without steps: the others' savings are totals over the whole trace
        claimed = (ctx.claims.claimed_s(GPU_IDLE, b.rank) * 1e9
                   / (1 if b.source == "steps" else b.in_trace))
        # the host work of a recorded step is slower by the profiler's own cost: that much
        # idle time is dsprof's, not the program's
        overhead = self._recording_cost_ns(ctx, b)
        saving = max(0.0, min(own - overhead, idle - claimed))
        if saving < MIN_OWN_SHARE * step_ns:
            return []
        return [self._finding(ctx, b, saving, claimed, overhead)]

    @staticmethod
    def _recording_cost_ns(ctx: Context, b: IdleBlocks) -> float:
        """How much longer the measured (recorded) steps are than the run's steady steps:
        0 for an import, whose steps were all recorded alike."""
        from dsprof.metrics.noise import steady_steps

        if b.source != "steps" or not ctx.run.manifest.is_run:
            return 0.0
        steady = [d for _, d, _ in steady_steps(ctx.run, b.rank)]
        if not steady:
            return 0.0
        return max(0.0, b.iteration_ns - float(statistics.median(steady)))

    @staticmethod
    def _ranks(ctx: Context) -> list[int]:
        return [int(r) for (r,) in ctx.run.sql("SELECT DISTINCT rank FROM kernels ORDER BY 1")
                if int(r) not in ctx.sampled_ranks]

    def _finding(self, ctx: Context, b: IdleBlocks, saving: float, claimed: float,
                 overhead: float) -> Finding:
        n = len(b.iterations)
        step_ns, idle = b.iteration_ns, b.per_iteration_ns
        per = {c: v / n for c, v in b.by_class.items()}
        lead = max(OWN, key=lambda c: per[c])
        unit = "step" if b.source == "steps" else "iteration"
        pct = 100 * idle / step_ns
        # where the largest block of a typical step sits
        offs = sorted(b.largest, key=lambda x: x[2])
        _, off, length = offs[len(offs) // 2]
        where = (f"{off / 1e6:.1f}-{(off + length) / 1e6:.1f} ms into the "
                 f"{step_ns / 1e6:.0f} ms {unit}")
        top = sorted(b.host_ops.items(), key=lambda kv: -kv[1])[:3]
        if lead == "data":
            title = (f"Load batches in DataLoader workers: the GPU idles {idle / 1e6:.1f} ms of "
                     f"each {step_ns / 1e6:.0f} ms {unit} ({pct:.0f}%) while the training "
                     "process loads the next batch itself")
        elif lead == "host":
            names = ", ".join(name for name, _ in top[:2]) or "CPU ops"
            title = (f"The GPU idles {idle / 1e6:.1f} ms per {unit} ({pct:.0f}%) with nothing "
                     f"queued while the host runs {names}")
        else:
            title = (f"Unexplained GPU idle {per['unexplained'] / 1e6:.1f} ms/{unit} "
                     f"({100 * per['unexplained'] / step_ns:.0f}% of the {unit}), the largest "
                     f"block {where}")
        split = ", ".join(f"{name} {per[c] / 1e6:.2f} ms" for c, name in (
            ("data", "loading data"), ("sync", "blocked in a sync"),
            ("after_sync", "just back from a sync"), ("launch", "launching kernels"),
            ("host", "other CPU ops"), ("unexplained", "nothing recorded")) if per[c] >= 5e3)
        iters = ("" if b.source == "steps" else
                 f" The trace marks no steps: iterations run from one "
                 f"{'batch fetch' if b.source == 'dataloader' else 'optimizer step'} to the "
                 "next, the first left out (one-time work: autotuning, allocator growth)."
                 + (f" Over the whole trace, that first iteration included, the GPU ran "
                    f"nothing {b.trace_idle_share:.0%} of the time."
                    if b.trace_idle_share is not None else ""))
        explanation = (
            f"Rank {b.rank}, {n} {unit}s: the whole GPU sat idle {idle / 1e6:.2f} ms per {unit} "
            f"in stretches of at least {MIN_BLOCK_NS / 1e6:.0f} ms ({pct:.0f}% of a "
            f"{step_ns / 1e6:.1f} ms {unit}); the largest sits {where}. Meanwhile the host "
            f"was: {split}.{iters} Other findings claim {claimed / 1e6:.2f} ms per {unit} of "
            f"GPU idle time (data loading, syncs, launches)"
            + (f"; the recorded steps are {overhead / 1e6:.2f} ms longer than the run's steady "
               "ones (the profiler's own cost), which is not claimed" if overhead else "")
            + f"; this one claims {saving / 1e6:.2f} ms of the rest, the time the host spent loading data, in "
            "other CPU ops or in nothing recorded while the GPU had no work queued.")
        ev = [Evidence(f"{label}: {length / 1e6:.2f} ms idle block {off / 1e6:.1f} ms into "
                       f"the {unit}", rank=b.rank, start_ns=start + off,
                       end_ns=start + off + length, value=length / 1e9)
              for (label, off, length), (_, start, _) in zip(b.largest, b.iterations)][:5]
        ev += [Evidence(f"host in {name} {ns / n / 1e6:.2f} ms per {unit} of the idle time",
                        rank=b.rank, value=ns / n / 1e9) for name, ns in top]
        return Finding(
            analyzer=self.name, kind="gpu.idle_block", key=f"rank{b.rank}|{lead}",
            title=title, saving_s=float(saving) / 1e9, confidence="low" if lead != "data" else "medium",
            explanation=explanation, evidence=tuple(ev), fix=_FIX[lead],
            verify=f"dsprof run {ctx.target_command}" if ctx.target_command else "",
            data={"rank": b.rank, "source": b.source, "iterations": n,
                  "saving_per": "step" if b.source == "steps" else "iteration",
                  "step_ms": step_ns / 1e6, "idle_ms_per_step": idle / 1e6,
                  "by_class_ms": {c: v / 1e6 for c, v in per.items()},
                  "claimed_elsewhere_ms": claimed / 1e6,
                  "recording_cost_ms": overhead / 1e6,
                  "trace_idle_share": b.trace_idle_share,
                  "largest_block": {"offset_ms": off / 1e6, "ms": length / 1e6}})
