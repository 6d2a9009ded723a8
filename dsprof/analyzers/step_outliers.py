"""Steps much slower than the others, and what differed in them.

A step is an outlier when it is slower than median + 3 robust standard deviations (1.4826 x
MAD) and at least 20 % above the median (the rule ``dsprof summary`` uses), over the steps that
count (a ``dsprof run``'s step 0, setup plus first iteration, is left out, and so is every step
in which torch.compile compiled: that is compile time, reported as such). At least 5 steps are
needed.

What differed, per outlier, from the columns every step has: time waiting for data
(``data_wait_ns``), time the stepping thread was off the CPU (``dur_ns - cpu_ns``: I/O,
syncs, other processes), and, when the outlier and a normal step were both profiled, the ops
whose self time grew most. Outliers that recur at a fixed interval (every N steps) are named as
periodic work (evaluation, checkpoint saving, logging).

The saving is the outliers' excess over the median, spread over all steps: what removing or
amortizing them would take off the mean step time.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

import numpy as np

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding

MIN_STEPS = 5


def compile_free(run: Any) -> str:
    """SQL condition on ``steps`` that leaves out the steps in which torch.compile compiled
    (runs written before the ``compile_ns`` column have none to leave out)."""
    has = run.sql("""SELECT count(*) FROM information_schema.columns
                     WHERE table_name = 'steps' AND column_name = 'compile_ns'""")[0][0]
    return "coalesce(compile_ns, 0) = 0" if has else "true"


def outlier_limit(durations: np.ndarray) -> float:
    med = float(np.median(durations))
    mad = float(np.median(np.abs(durations - med))) * 1.4826
    return max(med + 3 * mad, med * 1.2)


class StepOutliers(Analyzer):
    name = "step_outliers"
    requires = ("steps",)

    def run(self, ctx: Context) -> list[Finding]:
        skip0 = "AND step > 0" if ctx.meta.get("source") == "run" else ""
        no_compile = compile_free(ctx.run)
        out: list[Finding] = []
        for (rank,) in ctx.run.sql("SELECT DISTINCT rank FROM steps ORDER BY rank"):
            rows = ctx.run.sql(f"""
                SELECT step, start_ns, end_ns, dur_ns, cpu_ns, data_wait_ns, profiled
                FROM steps WHERE rank = ? AND dur_ns > 0 {skip0} AND {no_compile}
                ORDER BY step""", [rank])
            if len(rows) >= MIN_STEPS:
                finding = self._rank(ctx, int(rank), rows)
                if finding is not None:
                    out.append(finding)
        return out

    def _rank(self, ctx: Context, rank: int, rows: list[tuple]) -> Finding | None:
        dur = np.array([r[3] for r in rows], np.float64)
        med = float(np.median(dur))
        limit = outlier_limit(dur)
        slow = [r for r in rows if r[3] > limit]
        if not slow:
            return None
        excess = sum(r[3] - med for r in slow)
        normal = [r for r in rows if r[3] <= limit]
        base_wait = _median([r[5] for r in normal])
        base_off = _median([r[3] - r[4] for r in normal if r[4] is not None])
        evidence = []
        causes: Counter[str] = Counter()
        for step, start, end, d, cpu, wait, profiled in slow[:20]:
            parts = [f"step {step}: {d / 1e6:.1f} ms (median {med / 1e6:.1f} ms)"]
            extra = d - med
            if wait is not None and base_wait is not None and wait - base_wait > 0.3 * extra:
                parts.append(f"data wait +{(wait - base_wait) / 1e6:.1f} ms")
                causes["data"] += 1
            if cpu is not None and base_off is not None and (d - cpu) - base_off > 0.3 * extra:
                parts.append(f"off-CPU +{((d - cpu) - base_off) / 1e6:.1f} ms (waiting: I/O, "
                             "syncs, other processes)")
                causes["waiting"] += 1
            elif cpu is not None and base_off is not None:
                causes["compute"] += 1
            if profiled:
                grew = _ops_that_grew(ctx, rank, step, normal)
                if grew:
                    parts.append("grew: " + ", ".join(grew))
            evidence.append(Evidence("; ".join(parts), rank=rank, step=int(step),
                                     start_ns=int(start), end_ns=int(end), value=d / 1e6))
        period = _period([int(r[0]) for r in slow], int(rows[0][0]), int(rows[-1][0]))
        steps_txt = ", ".join(str(r[0]) for r in slow[:8]) + (" ..." if len(slow) > 8 else "")
        per_step = excess / len(rows) / 1e9
        kind = "steps.outliers"
        if period:
            every, residue = period
            periodic = [r for r in slow if r[0] % every == residue]
            kind = "steps.periodic"
            title = (f"Every {every} steps a step runs "
                     f"{np.mean([r[3] for r in periodic]) / med:.1f}x slower (rank {rank}): "
                     "periodic work in the training loop")
            fix = (f"# Work done every {every} steps (evaluation, checkpoint saving, logging, "
                   "an epoch restart)\n# runs on the training thread. Do it less often, or "
                   "off the critical path (a background thread for saving), e.g.:\n"
                   f"if step % {4 * every} == 0:  # was every {every} steps\n"
                   "    save_checkpoint(...)")
        else:
            title = f"{len(slow)} of {len(rows)} steps are outliers on rank {rank} " \
                    f"(up to {max(r[3] for r in slow) / med:.1f}x the median)"
            fix = _fix_for(causes)
        cause_txt = ", ".join(f"{k} ({v})" for k, v in causes.most_common()) or "unknown"
        return Finding(
            analyzer=self.name, kind=kind, key=f"rank{rank}",
            title=title, saving_s=per_step, confidence="medium" if causes else "low",
            explanation=(f"{'Step' if len(slow) == 1 else 'Steps'} {steps_txt} "
                         f"{'exceeds' if len(slow) == 1 else 'exceed'} the outlier limit of "
                         f"{limit / 1e6:.1f} ms "
                         f"(median {med / 1e6:.1f} ms). Together they run "
                         f"{excess / 1e6:.1f} ms over the median, {per_step * 1e3:.2f} ms per "
                         f"step on average over {len(rows)} steps. Likely causes by step: "
                         f"{cause_txt}."),
            evidence=tuple(evidence), fix=fix,
            verify="dsprof run ... then dsprof summary RUN: the outlier steps are gone",
            data={"median_ms": med / 1e6, "limit_ms": limit / 1e6,
                  "period": period[0] if period else None,
                  "steps": [int(r[0]) for r in slow]})


def _median(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else None


def _period(steps: list[int], first: int, last: int) -> tuple[int, int] | None:
    """(N, residue) when the outliers include every N-th step of the run (at least 3 of
    them, 80 % of that residue's steps between ``first`` and ``last``, and 60 % of the
    outliers), else None. Noise outliers in between do not hide the pattern."""
    if len(steps) < 3:
        return None
    slow = set(steps)
    best: tuple[int, int, int] | None = None
    for p in sorted({b - a for a, b in pairwise(steps) if b - a > 1}):
        hits = Counter(s % p for s in steps)
        residue, count = hits.most_common(1)[0]
        expected = [k for k in range(first, last + 1) if k % p == residue]
        covered = sum(k in slow for k in expected)
        if (count >= 3 and covered >= 0.8 * len(expected) and count >= 0.6 * len(steps)
                and (best is None or count > best[1])):
            best = (p, residue, count)
    return (best[0], best[1]) if best else None


def _fix_for(causes: Counter[str]) -> str:
    if causes and causes.most_common(1)[0][0] == "data":
        return ("# The slow steps waited for data: load ahead with workers\n"
                "DataLoader(dataset, ..., num_workers=4, persistent_workers=True, "
                "prefetch_factor=2)")
    if causes and causes.most_common(1)[0][0] == "waiting":
        return ("# The slow steps waited off the CPU (I/O, host-device syncs, another process).\n"
                "# Look for file or network access and .item()/.cpu() calls in those steps:\n"
                "#   dsprof summary RUN   (host syncs per line)  and  DS_LOG_LEVEL=DEBUG")
    return ("# The slow steps did more work. Profile them: widen the window over them with\n"
            "#   dsprof run --wait N --active M ...  and compare their ops with a normal step.")


def _ops_that_grew(ctx: Context, rank: int, step: int, normal: list[tuple]) -> list[str]:
    """The three ops whose self time grew most against the median of the profiled normal
    steps."""
    ref = [int(r[0]) for r in normal if r[6]]
    if not ref:
        return []
    rows = ctx.run.sql("""
        WITH per AS (
            SELECT step, name, sum(self_ns) AS t FROM ops
            WHERE rank = ? AND cat = 'cpu_op' AND step IN (SELECT unnest(?::BIGINT[]))
            GROUP BY step, name),
        base AS (SELECT name, median(t) AS t FROM per WHERE step <> ? GROUP BY name)
        SELECT p.name, p.t - coalesce(b.t, 0) AS grew FROM per p LEFT JOIN base b USING (name)
        WHERE p.step = ? ORDER BY grew DESC, p.name LIMIT 3""", [rank, [*ref, step], step, step])
    return [f"{name} +{g / 1e6:.1f} ms" for name, g in rows if g and g > 0]
