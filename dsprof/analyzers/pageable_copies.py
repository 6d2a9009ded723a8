"""Host-to-device copies from pageable memory (``kernels``; GPU traces), for the input
pipeline analyzer: ``Memcpy HtoD (Pageable -> Device)`` blocks the host for the whole copy (the
runtime stages it through a pinned buffer); from pinned memory with ``non_blocking=True`` it
overlaps compute. Saving: the host time of those copies' launches per step
(``cudaMemcpyAsync`` duration), confidence low (the overlap depends on what follows)."""

from __future__ import annotations

from dsprof.analyzers.registry import Context
from dsprof.findings import Evidence, Finding
from dsprof.units import fmt_bytes, fmt_duration_ms


def pageable_copies(ctx: Context, analyzer: str, verify: str) -> list[Finding]:
    """One finding per rank whose host-to-device copies came from pageable memory."""
    rows = ctx.run.sql("""
        SELECT k.rank, count(*), sum(k.bytes), sum(k.dur_ns), sum(o.dur_ns),
               count(DISTINCT k.step), min(k.start_ns), min(k.launch_id)
        FROM kernels k LEFT JOIN ops o ON o.rank = k.rank AND o.id = k.launch_id
        WHERE k.kind = 'memcpy' AND k.name LIKE '%HtoD%Pageable%'
        GROUP BY k.rank ORDER BY k.rank""")
    out = []
    for rank, n, nbytes, dev_ns, host_ns, n_steps, first, launch in rows:
        # Kernels outside every step (a trace with no ProfilerStep) count as one step.
        blocked = float(host_ns or dev_ns or 0) / max(int(n_steps or 0), 1)
        unit = (ctx.words.per_step if n_steps
                else f"{ctx.words.in_capture} (it marks no steps)")
        if blocked <= 0:
            continue
        out.append(Finding(
            analyzer=analyzer, kind="input.pageable_copy", key=f"rank{rank}",
            title=(f"Copy inputs from pinned memory: {n} host-to-device copies from pageable "
                   f"memory block the host {fmt_duration_ms(blocked / 1e6)} {unit}"),
            saving_s=blocked / 1e9, confidence="low",
            # sizes and times in the unit they read best in: a few KiB copied in
            # microseconds is not "0.0 MiB in 0.0 ms"
            explanation=(f"{n} copies of {fmt_bytes(nbytes) if nbytes else 'unknown size'} "
                         f"in all ran {fmt_duration_ms(int(dev_ns or 0) / 1e6)} on the "
                         "device; their launches held the host "
                         f"{fmt_duration_ms(int(host_ns or 0) / 1e6)} because pageable "
                         "memory is staged synchronously. Pinned memory with "
                         "non_blocking=True lets the copy overlap compute."),
            evidence=(Evidence(f"Memcpy HtoD (Pageable -> Device) x {n}", rank=int(rank),
                               start_ns=int(first), op_ids=(int(launch),) if launch else ()),),
            fix=("loader = DataLoader(..., pin_memory=True)\n"
                 "x = x.to(device, non_blocking=True)"),
            verify=verify))
    return out


