"""What differed in a run's slow steps from its normal ones, read from the tables every run has:
the source lines only the slow steps ran (host syncs), the ops whose self time grew, and
whether the steps are an inference run's forwards. analyzers/step_outliers.py's verdicts use
them."""

from __future__ import annotations

from collections import Counter

from dsprof.analyzers.claims import DATA_WAIT
from dsprof.analyzers.registry import Context
from dsprof.metrics.noise import has_column

# Outliers that ran lines no normal step ran are the script's extra work when they carry at
# least this share of the outliers' excess time (the rest: noise outliers beside them).
EXTRA_WORK_SHARE = 0.6


def forward_steps(ctx: Context, rank: int, steps: list[int]) -> bool:
    """Whether all of ``steps`` are inference forwards (``steps.source`` = ``forward``)."""
    if not has_column(ctx.run, "steps", "source"):
        return False
    (n,), = ctx.run.sql("""SELECT count(*) FROM steps WHERE rank = ? AND source = 'forward'
                           AND step IN (SELECT unnest(?::BIGINT[]))""", [rank, steps])
    return bool(n) and n == len(steps)



def extra_work(ctx: Context, rank: int, slow: list[tuple], normal: list[tuple],
                med: float) -> tuple[set[int], list[str]] | None:
    """The outliers that ran source lines no normal step ran (host syncs), and those lines (up
    to 3), when those outliers carry EXTRA_WORK_SHARE of the excess; else None."""
    if not slow or not ctx.nonempty("host_syncs"):
        return None
    rows = ctx.run.sql("""
        SELECT step, site FROM host_syncs
        WHERE rank = ? AND site IS NOT NULL AND step IN (SELECT unnest(?::BIGINT[]))
          AND site NOT IN (SELECT site FROM host_syncs WHERE rank = ? AND site IS NOT NULL
                           AND step IN (SELECT unnest(?::BIGINT[])))
        GROUP BY ALL ORDER BY step, site""",
                       [rank, [int(r[0]) for r in slow[:20]], rank,
                        [int(r[0]) for r in normal]])
    steps = {int(step) for step, _ in rows}
    excess = {int(r[0]): r[3] - med for r in slow}
    if not steps or sum(excess.get(s, 0) for s in steps) < EXTRA_WORK_SHARE * sum(
            excess.values()):
        return None
    return steps, sorted({site for _, site in rows})[:3]



def ops_that_grew(ctx: Context, rank: int, step: int, normal: list[tuple]) -> list[str]:
    """The three ops whose self time grew most against the median of the profiled normal
    steps."""
    ref = [int(r[0]) for r in normal if r[6]]
    if not ref or not ctx.run.has("ops"):
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


def fix_for_causes(causes: Counter[str]) -> str:
    if causes and causes.most_common(1)[0][0] == "waiting":
        return ("# The slow steps waited off the CPU (I/O, host-device syncs, another process).\n"
                "# Look for file or network access and .item()/.cpu() calls in those steps:\n"
                "#   dsprof summary RUN   (host syncs per line)  and  DS_LOG_LEVEL=DEBUG")
    return ("# The slow steps did more work. Profile them: widen the window over them with\n"
            "#   dsprof run --wait N --active M ...  and compare their ops with a normal step.")


def input_wait_fix(ctx: Context, rank: int) -> str:
    """The fix of outliers that mostly waited for data: the input findings' (``claims.py``
    ``data_wait``), which price that wait; more workers do not help a loader rebuilt each
    epoch."""
    by = sorted({c.claimed_by.split(":")[0] for c in ctx.claims.by(DATA_WAIT)
                 if c.rank in (None, rank)})
    head = (f"# These steps waited for data; the input finding(s) {', '.join(by)} give the fix "
            "for that wait\n" if by else
            "# These steps waited for data: the input pipeline's findings price that wait "
            "(none was\n# made for this run)\n")
    return head + "#   dsprof analyze RUN --only input_pipeline"
