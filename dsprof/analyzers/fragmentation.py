"""Memory the CUDA caching allocator holds but cannot use: fragmentation.

Example:
    Allocations of varying sizes split the allocator's segments; freed pieces between live
    blocks are too small or in the wrong place for the next request, so the allocator
    cudaMallocs more (``reserved`` climbs above ``allocated``), retries after flushing its cache
    (``num_alloc_retries``), and eventually runs out of memory with gigabytes "free".

Pattern:
    At the worst moment seen (``allocator`` rows: ``memory_stats()`` at every step boundary and
    each CUDA snapshot's segments), the free bytes inside segments that also hold live blocks
    (``inactive_split``: they cannot be returned to the device or serve a larger request) are
    at least 5 % of the peak reserved memory and 16 MiB; or the allocator retried at all.

Algorithm:
    The saving is those bytes: with ``expandable_segments`` the allocator grows one segment per
    stream in place instead of carving new ones, so free pieces coalesce. Retries and cudaMalloc
    churn (calls per step) go in the explanation; both cost time as well as memory.

Imported traces have no ``allocator`` rows, but a profiler's ``[memory]`` events carry the
allocator's ``Total Reserved`` beside ``Total Allocated`` (``memory.reserved``/``allocated``).
They cannot tell split blocks from cached whole ones, so the claim is the coarser one: the
caching allocator only reserves a new segment when no cached free block fits the request, so
reserved memory above the most ever allocated at once (``peak reserved - peak allocated``) is
memory it holds and could not use. It fires when that slack is at least ``MIN_SLACK_SHARE`` of
the peak reserved and 16 MiB (confidence low: the events do not say which blocks were split).
A device whose events report no reserved total (2021 Kineto, CPU) is skipped with that reason.
"""

from __future__ import annotations

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding

MIN_SHARE = 0.05
MIN_BYTES = 16 << 20
MIN_SLACK_SHARE = 0.2
ALLOC_CONF = "expandable_segments:True"


class FragmentationAnalyzer(Analyzer):
    name = "fragmentation"
    requires = ()

    def skip_reason(self, ctx: Context) -> str | None:
        if self._allocator_devices(ctx) or self._event_devices(ctx):
            return None
        if ctx.nonempty("memory") and ctx.run.sql(
                "SELECT count(*) FROM memory WHERE device <> 'cpu'")[0][0]:
            return ("the trace's [memory] events carry no Total Reserved (Kineto before 1.9 "
                    "records Bytes only), and there is no CUDA allocator state")
        return ("needs allocator state: memory_stats or a CUDA snapshot (a dsprof run on a "
                "GPU), or [memory] events with Total Reserved (profile_memory=True); a CPU has "
                "no caching allocator")

    def run(self, ctx: Context) -> list[Finding]:
        out = []
        stats = self._allocator_devices(ctx)
        for rank, device in stats:
            f = self._device(ctx, rank, device)
            if f is not None:
                out.append(f)
        for rank, device in self._event_devices(ctx):
            if (rank, device) not in stats:  # memory_stats/snapshots say more where present
                f = self._from_events(ctx, rank, device)
                if f is not None:
                    out.append(f)
        return out

    @staticmethod
    def _allocator_devices(ctx: Context) -> list[tuple[int, str]]:
        if not ctx.nonempty("allocator"):
            return []
        return [(int(r), str(d)) for r, d in ctx.run.sql(
            "SELECT DISTINCT rank, device FROM allocator WHERE reserved IS NOT NULL "
            "ORDER BY 1, 2")]

    @staticmethod
    def _event_devices(ctx: Context) -> list[tuple[int, str]]:
        """Accelerators whose [memory] events report the allocator's reserved total (a CPU
        reports 0: it has no caching allocator)."""
        if not ctx.nonempty("memory"):
            return []
        return [(int(r), str(d)) for r, d in ctx.run.sql(
            "SELECT DISTINCT rank, device FROM memory WHERE reserved > 0 AND device <> 'cpu' "
            "ORDER BY 1, 2")]

    def _from_events(self, ctx: Context, rank: int, device: str) -> Finding | None:
        """Reserved above the peak allocated, from [memory] events (imported traces)."""
        peak_alloc, peak_reserved = ctx.run.sql(
            "SELECT max(allocated), max(reserved) FROM memory WHERE rank = ? AND device = ?",
            [rank, device])[0]
        peak_alloc, peak_reserved = int(peak_alloc or 0), int(peak_reserved or 0)
        slack = peak_reserved - peak_alloc
        if slack < MIN_BYTES or slack < MIN_SLACK_SHARE * peak_reserved:
            return None
        ts, step, alloc_then = ctx.run.sql(
            "SELECT ts_ns, step, allocated FROM memory WHERE rank = ? AND device = ? "
            "ORDER BY reserved DESC, ts_ns LIMIT 1", [rank, device])[0]
        ratio = peak_reserved / max(peak_alloc, 1)
        where = f"step {step}" if step is not None else "in the trace"
        ev = (Evidence(f"reserved peaks at {_mib(peak_reserved)} MiB {where} (allocated then "
                       f"{_mib(int(alloc_then or 0))} MiB); allocated never exceeds "
                       f"{_mib(peak_alloc)} MiB ([memory] events' Total Reserved / Total "
                       "Allocated)", rank=rank, step=step, start_ns=ts, value=slack),)
        return Finding(
            analyzer=self.name, kind="memory.fragmentation", key=device,
            title=f"Set PYTORCH_CUDA_ALLOC_CONF={ALLOC_CONF}: {device} reserves "
                  f"{_mib(peak_reserved)} MiB, {ratio:.1f}x the {_mib(peak_alloc)} MiB ever "
                  "allocated at once",
            saving_bytes=slack, confidence="low",
            explanation=(f"The caching allocator held {_mib(slack)} MiB "
                         f"({100 * slack / peak_reserved:.0f} % of its peak reserved "
                         f"{_mib(peak_reserved)} MiB) beyond the most the program ever had "
                         "allocated. It reserves a new segment only when no cached free block "
                         "fits a request, so that memory sat in pieces that did not fit. "
                         "Expandable segments grow one segment in place, so freed space "
                         "coalesces. The trace's [memory] events do not say which blocks were "
                         "split, hence low confidence; memory_stats() in a dsprof run does."),
            evidence=ev,
            fix=f"export PYTORCH_CUDA_ALLOC_CONF={ALLOC_CONF}   # before the process starts",
            apply={"PYTORCH_CUDA_ALLOC_CONF": ALLOC_CONF},
            verify=(f"PYTORCH_CUDA_ALLOC_CONF={ALLOC_CONF} dsprof run {ctx.target_command}"
                    if ctx.target_command else ""),
            data={"fragmented_bytes": slack, "reserved_peak": peak_reserved,
                  "allocated_peak": peak_alloc, "source": "memory_events"})

    def _device(self, ctx: Context, rank: int, device: str) -> Finding | None:
        worst = ctx.run.sql("""
            SELECT inactive_split, reserved, allocated, largest_free, step, source, ts_ns
            FROM allocator WHERE rank = ? AND device = ? AND reserved IS NOT NULL
            ORDER BY inactive_split DESC NULLS LAST, reserved DESC LIMIT 1""", [rank, device])
        frag, reserved, allocated, largest, step, source, ts = worst[0]
        peak_reserved, retries, allocs, frees, n_steps = ctx.run.sql("""
            SELECT max(reserved), max(alloc_retries), max(device_allocs) - min(device_allocs),
                   max(device_frees) - min(device_frees), count(DISTINCT step)
            FROM allocator WHERE rank = ? AND device = ? AND source = 'memory_stats'""",
                                                                    [rank, device])[0]
        peak_reserved = max(peak_reserved or 0, reserved or 0)
        frag = int(frag or 0)
        retries = int(retries or 0)
        if not ((frag >= MIN_BYTES and frag >= MIN_SHARE * peak_reserved) or retries > 0):
            return None
        where = f"step {step}" if step is not None else f"the {source}"
        ev = [Evidence(f"{_mib(frag)} MiB free inside segments that hold live blocks at {where} "
                       f"(reserved {_mib(reserved or 0)} MiB, allocated {_mib(allocated or 0)} "
                       "MiB" + (f", largest free block {_mib(largest)} MiB" if largest else "")
                       + ")", rank=rank, step=step, start_ns=ts, value=frag)]
        churn = ""
        if n_steps and allocs:
            churn = (f" The allocator called cudaMalloc {allocs} and cudaFree {frees or 0} times "
                     f"over {n_steps} steps.")
        if retries:
            ev.append(Evidence(f"{retries} allocation retries: the allocator had to free its "
                               "cache and try again", rank=rank, value=retries))
        return Finding(
            analyzer=self.name, kind="memory.fragmentation", key=device,
            title=f"Set PYTORCH_CUDA_ALLOC_CONF={ALLOC_CONF}: {_mib(frag)} MiB of reserved "
                  f"memory on {device} is fragmented",
            saving_bytes=frag, confidence="medium",
            explanation=(f"{_mib(frag)} MiB ({100 * frag / max(peak_reserved, 1):.0f} % of the "
                         f"peak reserved {_mib(peak_reserved)} MiB) sat free between live "
                         "blocks, where no larger request can use it. Expandable segments let "
                         "the allocator grow a segment in place, so freed space coalesces."
                         + churn),
            evidence=tuple(ev),
            fix=f"export PYTORCH_CUDA_ALLOC_CONF={ALLOC_CONF}   # before the process starts",
            apply={"PYTORCH_CUDA_ALLOC_CONF": ALLOC_CONF},
            verify=(f"PYTORCH_CUDA_ALLOC_CONF={ALLOC_CONF} dsprof run {ctx.target_command}"
                    if ctx.target_command else ""),
            data={"fragmented_bytes": frag, "reserved_peak": peak_reserved,
                  "alloc_retries": retries})


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"
