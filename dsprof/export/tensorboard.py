"""A run's per-step series as TensorBoard event files, via ``torch.utils.tensorboard``.

One TensorBoard run per rank (``OUT/rank<R>/``), so TensorBoard overlays the ranks. Scalars,
with the step number as TensorBoard's step:

==============================  ============================================================
``step/time_ms``                step wall time
``step/steps_per_s``            throughput, 1 / step time
``step/samples_per_s``          when ``steps`` has a ``batch_size`` column
``memory/rss_mib``              process RSS at the step's end
``memory/device_peak_mib``      accelerator allocator peak during the step
``memory/<category>_mib``       peak live bytes of each category within the step, when the
                                ``memory`` table has categories
``amp/loss_scale``, ``amp/skipped``  GradScaler scale and skipped steps (1 = skipped)
``comm/share``                  collective time / step time, when a ``comms`` table exists
==============================  ============================================================

Findings go in as text (``findings``), one entry per finding.
"""

from __future__ import annotations

from pathlib import Path

from dsprof.errors import ConfigError
from dsprof.run import Run
from dsprof.sqlsafe import table_columns


def default_path(run: Run) -> Path:
    return run.path / "tensorboard"


def write_tensorboard(run: Run, out: Path | None = None) -> tuple[Path, int]:
    """Write the event files. Returns (folder, number of scalar points written).

    Raises:
        ConfigError: the tensorboard package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--format tensorboard needs the tensorboard package: "
                          "pip install tensorboard") from None
    out = out or default_path(run)
    if not run.has("steps"):
        raise ConfigError(f"{run.path} has no steps table; nothing to plot per step")
    series = _series(run)
    points = 0
    for rank in sorted({r for r, _, _, _ in series}):
        writer = SummaryWriter(log_dir=str(out / f"rank{rank}"))
        try:
            for r, tag, step, value in series:
                if r == rank and value is not None:
                    writer.add_scalar(tag, float(value), global_step=int(step))
                    points += 1
            if rank == min(r for r, _, _, _ in series):
                _findings_text(run, writer)
        finally:
            writer.close()
    return out, points


def _columns(run: Run, table: str) -> set[str]:
    return table_columns(run, table)


def _series(run: Run) -> list[tuple[int, str, int, float | None]]:
    cols = _columns(run, "steps")
    out: list[tuple[int, str, int, float | None]] = []
    batch = "batch_size" if "batch_size" in cols else "NULL"
    amp = "loss_scale, skipped" if {"loss_scale", "skipped"} <= cols else "NULL, NULL"
    for rank, step, dur, rss, peak, bs, scale, skipped in run.sql(f"""
            SELECT rank, step, dur_ns, rss_bytes, device_peak_bytes, {batch}, {amp}
            FROM steps ORDER BY rank, step"""):
        sec = dur / 1e9 if dur and dur > 0 else None
        out.append((rank, "step/time_ms", step, dur / 1e6 if dur is not None else None))
        out.append((rank, "step/steps_per_s", step, 1 / sec if sec else None))
        if bs is not None and sec:
            out.append((rank, "step/samples_per_s", step, bs / sec))
        out.append((rank, "memory/rss_mib", step, rss / 2**20 if rss is not None else None))
        out.append((rank, "memory/device_peak_mib", step,
                    peak / 2**20 if peak is not None else None))
        out.append((rank, "amp/loss_scale", step, scale))
        out.append((rank, "amp/skipped", step, None if skipped is None else float(skipped)))
    if run.has("memory") and run.sql("SELECT count(category) FROM memory")[0][0]:
        # Live bytes per category: the running sum of signed changes in event order
        # (pre-existing tensors, with no time, first); its highest point within each step.
        for rank, step, category, peak in run.sql("""
                WITH live AS (
                    SELECT rank, step, category, sum(bytes) OVER (
                        PARTITION BY rank, category ORDER BY ts_ns NULLS FIRST
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS live
                    FROM memory WHERE category IS NOT NULL)
                SELECT rank, step, category, max(live) FROM live
                WHERE step IS NOT NULL GROUP BY ALL ORDER BY ALL"""):
            out.append((rank, f"memory/{category}_mib", step, peak / 2**20))
    if run.has("comms") and {"step", "dur_ns", "rank"} <= _columns(run, "comms"):
        for rank, step, share in run.sql("""
                SELECT s.rank, s.step, sum(c.dur_ns) / any_value(s.dur_ns)
                FROM comms c JOIN steps s ON c.rank = s.rank AND c.step = s.step
                WHERE s.dur_ns > 0 GROUP BY ALL ORDER BY ALL"""):
            out.append((rank, "comm/share", step, share))
    return out


def _findings_text(run: Run, writer) -> None:
    from dsprof.analyzers.registry import read_findings

    found = read_findings(run)
    for i, f in enumerate(found.findings if found else []):
        writer.add_text("findings", f"**{f.title}** ({f.severity}, {f.id})\n\n{f.explanation}",
                        global_step=i)
