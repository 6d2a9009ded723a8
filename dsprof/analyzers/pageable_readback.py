"""Finding: blocking device-to-host copies into pageable memory that hold the host.

Example:
    ``loss.item()``, ``logits.cpu()`` or ``metric.tolist()`` every step: the runtime call
    (``cudaMemcpy``, or ``cudaMemcpyAsync`` into pageable memory, which is synchronous) waits for
    every queued kernel, then copies through a staging buffer; the host launches nothing until
    it returns, and the GPU idles while the driver finishes the copy on the host side.

Pattern:
    ``Memcpy DtoH (Device -> Pageable)`` device events (``kernels``, kind memcpy) joined to the
    runtime call that issued them (``launch_id``), per step. Precondition: a GPU trace with
    steps, and those calls hold the host at least ``MIN_SHARE`` of the step.

Algorithm:
    The host time of the calls is the evidence (how much of the step the host is held). The
    saving is the GPU's idle time *during* the calls (whole device, every stream: after the
    queue drained, while the pageable copy completes), counted once per step. ``host_sync``
    already claims the idle time *after* each call (from its end to the next device activity);
    the two intervals do not overlap, so no time is counted twice. With a pinned buffer and
    ``non_blocking=True`` the copy is DMA into the buffer, the host does not wait, and both
    idle stretches go away; the fix also names the usual cause (``.item()``/``.cpu()`` in the
    loop).
"""

from __future__ import annotations

import numpy as np

from dsprof.analyzers.claims import GPU_IDLE
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding

MIN_SHARE = 0.05

_FIX = """# Read results back without holding the host. Either log every N steps:
running += loss.detach()                 # stays on the device, no copy
if step % 100 == 0:
    print(running.item() / 100); running.zero_()
# or copy into a pinned buffer without blocking and read it a step later:
host_buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)   # once, before the loop
host_buf.copy_(t, non_blocking=True); ready = torch.cuda.Event(); ready.record()
# ... next step: ready.synchronize(); use host_buf"""


class PageableReadbackAnalyzer(Analyzer):
    name = "pageable_readback"
    requires = ("kernels", "ops", "steps")
    claims = ((GPU_IDLE, ("host_sync.",)),)

    def run(self, ctx: Context) -> list[Finding]:
        out = []
        calls = ctx.run.sql("""
            SELECT o.rank, o.step, o.id, o.name, o.start_ns, o.dur_ns, k.bytes,
                   -- the outermost aten op of the call's chain names what the user wrote
                   -- (aten::item, not the aten::_local_scalar_dense under it)
                   coalesce(CASE WHEN g2.name LIKE 'aten::%' THEN g2.name END,
                            CASE WHEN g1.name LIKE 'aten::%' THEN g1.name END,
                            p.name, o.name) AS issued_by,
                   coalesce(p.module, '')
            FROM kernels k JOIN ops o ON o.rank = k.rank AND o.id = k.launch_id
            LEFT JOIN ops p ON p.rank = o.rank AND p.id = o.parent_id
            LEFT JOIN ops g1 ON g1.rank = p.rank AND g1.id = p.parent_id
            LEFT JOIN ops g2 ON g2.rank = g1.rank AND g2.id = g1.parent_id
            WHERE k.kind = 'memcpy' AND k.name LIKE '%DtoH%Pageable%' AND o.step IS NOT NULL
            ORDER BY o.rank, o.start_ns""")
        by_rank: dict[int, list[tuple]] = {}
        for row in calls:
            by_rank.setdefault(int(row[0]), []).append(row)
        for rank, rows in sorted(by_rank.items()):
            f = self._rank(ctx, rank, rows)
            if f is not None:
                out.append(f)
        return out

    def _rank(self, ctx: Context, rank: int, rows: list[tuple]) -> Finding | None:
        if not ctx.run.has("steps"):  # its cost is a share of the step it stalls
            return None
        steps = ctx.run.sql("SELECT count(*), avg(dur_ns) FROM steps WHERE rank = ? AND step "
                            "IN (SELECT DISTINCT step FROM kernels WHERE rank = ?)",
                            [rank, rank])[0]
        n_steps, step_ns = int(steps[0] or 0), float(steps[1] or 0)
        if not n_steps or not step_ns:
            return None
        # one runtime call may issue a copy in pieces: count each call once
        calls = {r[2]: r for r in rows}
        host_ns = sum(int(r[5]) for r in calls.values()) / n_steps
        if host_ns < MIN_SHARE * step_ns:
            return None
        idle_ns = float(self._idle_during(ctx, rank, list(calls.values()))) / n_steps
        by_op: dict[tuple[str, str], list[int]] = {}
        for r in calls.values():
            by_op.setdefault((r[7], r[8]), []).append(int(r[5]))
        top = sorted(by_op.items(), key=lambda kv: -sum(kv[1]))
        (op, module), _ = top[0]
        where = op + (f" in {module}" if module else "")
        share = host_ns / step_ns
        nbytes = sum(int(r[6] or 0) for r in calls.values()) / n_steps
        words = ctx.words
        return Finding(
            analyzer=self.name, kind="host_sync.pageable_readback", key=f"rank{rank}|{op}",
            title=(f"Read results back without blocking: {len(calls) / n_steps:.1f} "
                   f"device-to-pageable copies {words.per_step} from {where} hold the host "
                   f"{host_ns / 1e6:.2f} ms ({share:.0%} {words.of_the_step})"),
            saving_s=idle_ns / 1e9, confidence="medium",
            explanation=(f"Rank {rank}, {n_steps} steps of {step_ns / 1e6:.1f} ms: "
                         f"{len(calls)} blocking copies into pageable host memory "
                         f"({nbytes / 1024:.1f} KiB {words.per_step}) held the host "
                         f"{host_ns / 1e6:.2f} ms {words.per_step}; it launches nothing "
                         f"meanwhile. During them the whole GPU also sat idle "
                         f"{idle_ns / 1e6:.2f} ms {words.per_step} (the queue drained, the copy "
                         "finishing through the staging buffer): that is the saving claimed "
                         "here. The idle time after each copy, until the next launch, is the "
                         "host-sync finding's."),
            evidence=tuple(Evidence(f"{name} from {o}{' in ' + m if m else ''}: "
                                    f"{dur / 1e3:.0f} us host", rank=rank, step=int(step),
                                    start_ns=int(start), end_ns=int(start) + int(dur),
                                    op_ids=(int(cid),), module=m or None, value=dur / 1e9)
                           for _, step, cid, name, start, dur, _, o, m in
                           sorted(calls.values(), key=lambda r: -int(r[5]))[:5]),
            fix=_FIX,
            verify=f"dsprof run {ctx.target_command}" if ctx.target_command else "",
            data={"rank": rank, "host_ms_per_step": host_ns / 1e6,
                  "gpu_idle_during_ms_per_step": idle_ns / 1e6, "host_share": share,
                  "copies_per_step": len(calls) / n_steps,
                  "by_op_ms": {f"{o}|{m}": sum(v) / n_steps / 1e6 for (o, m), v in top}})

    @staticmethod
    def _idle_during(ctx: Context, rank: int, calls: list[tuple]) -> int:
        """ns inside the calls during which no stream of the device ran anything."""
        lo = min(int(r[4]) for r in calls)
        hi = max(int(r[4]) + int(r[5]) for r in calls)
        busy = ctx.run.sql("""
            SELECT start_ns, start_ns + greatest(dur_ns, 0) FROM kernels
            WHERE rank = ? AND kind <> 'sync' AND start_ns < ? AND start_ns + dur_ns > ?
            ORDER BY start_ns""", [rank, hi, lo])
        starts = np.array([b[0] for b in busy], np.int64)
        ends = np.maximum.accumulate(np.array([b[1] for b in busy], np.int64)) \
            if busy else np.zeros(0, np.int64)
        idle = 0
        for r in calls:
            a, b = int(r[4]), int(r[4]) + int(r[5])
            covered, cur = 0, a
            for s, e in zip(starts, ends):
                if e <= cur or s >= b:
                    if s >= b:
                        break
                    continue
                covered += int(min(e, b) - max(s, cur))
                cur = int(min(e, b))
            idle += (b - a) - covered
        return idle
