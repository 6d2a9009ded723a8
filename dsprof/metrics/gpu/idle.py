"""Why the GPU sat idle, how long launches took, and how deep the launch queues ran, as
Holistic Trace Analysis computes them (HTA 0.5.0 ``get_idle_time_breakdown``,
``get_cuda_kernel_launch_stats``, ``get_queue_length_summary``), from the ``kernels`` and
``ops`` tables with DuckDB.

Contract (views ``kernels`` and ``ops`` as in :mod:`dsprof.schema`, int64 ns):

* **Kept events** (``include_last_step=False`` is HTA's default): with at least two distinct
  ProfilerStep names, a device event counts only if its launching runtime call started before
  the start of its rank's last ProfilerStep, and only runtime calls that started before it count
  (HTA drops both). Otherwise everything counts.
* **Idle split**, per rank and stream: kernels, memcpy and memset (not ``sync`` events) in start
  order; each gap is ``start - end of the previous event on the stream``. It is **host_wait**
  when the event's launching runtime call started after that previous end (the CPU was late),
  else **kernel_wait** when the gap is under ``kernel_wait_ns`` (30 us, launch latency between
  back-to-back kernels), else **other**. ``ratio`` is the share of the stream's idle time.
* **Launch stats**, per rank: every runtime call named ``cudaLaunchKernel``,
  ``cudaLaunchKernelExC`` (and ``cudaMemcpyAsync``/``cudaMemsetAsync`` with
  ``include_memory=True``) joined with its device events on the correlation id.
  ``cpu_ns`` is the call's duration, ``gpu_ns`` the event's, ``delay_ns`` =
  event start - call end, clipped at 0. Outliers: calls longer than ``runtime_cutoff_ns``
  (50 us) and delays over ``delay_cutoff_ns`` (100 us); "GPU shorter than CPU" counts events that
  ran for less time than their launch call took.
* **Queue length**, per rank and stream: +1 at each launching runtime call (HTA's list, which adds
  ``cuLaunchKernel`` and the HIP launches), -1 at the start of its device event; the running sum
  after each change is one sample, and the summary is over those samples (not time-weighted),
  as HTA's ``describe()``. ``max_ns_at_limit`` is the time spent at CUDA's 1024-launch limit.

Differences with HTA that remain: HTA ceils float (ns-resolution) start times and floors end
times to whole microseconds; on the A100 test trace that moves the idle split by up to 0.7
points. HTA's ``describe()`` uses the sample standard deviation and linear quantiles, as here.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from dsprof.metrics.gpu.breakdown import LAST_STEP_CTE, drops_last_step

KERNEL_WAIT_NS = 30_000
RUNTIME_CUTOFF_NS = 50_000
DELAY_CUTOFF_NS = 100_000
CUDA_MAX_QUEUE = 1024
IDLE_CATEGORIES = ("host_wait", "kernel_wait", "other")

_LAUNCH_NAMES = ("cudaLaunchKernel", "cudaLaunchKernelExC")
_MEMORY_LAUNCH_NAMES = ("cudaMemcpyAsync", "cudaMemsetAsync")
_QUEUE_NAMES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cudaMemcpyAsync",
                "cudaMemsetAsync", "hipLaunchKernel", "hipExtModuleLaunchKernel",
                "hipMemcpyAsync", "hipMemsetAsync", "hipMemcpyWithStream")


@dataclass(frozen=True)
class IdleShare:
    """Idle time of one category on one stream of one rank."""

    rank: int
    stream: int
    category: str
    idle_ns: int
    ratio: float
    """share of the stream's idle time, 0..1"""
    gaps: int


@dataclass(frozen=True)
class LaunchStats:
    """Launch statistics of one rank."""

    rank: int
    launches: int
    cpu_mean_ns: float
    cpu_median_ns: float
    gpu_mean_ns: float
    delay_mean_ns: float
    delay_median_ns: float
    gpu_shorter_than_cpu: int
    runtime_outliers: int
    delay_outliers: int


@dataclass(frozen=True)
class QueueLength:
    """Summary of the launch-queue length samples of one stream of one rank."""

    rank: int
    stream: int
    count: int
    mean: float
    std: float | None
    min: int
    p25: float
    p50: float
    p75: float
    max: int
    max_ns_at_limit: int


def _sql_list(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _kept(con: duckdb.DuckDBPyConnection, include_last_step: bool) -> tuple[str, str]:
    """(CTE prefix, predicate on runtime op ``o``) of HTA's last-step convention."""
    if not drops_last_step(con, include_last_step):
        return "", "TRUE"
    return f"{LAST_STEP_CTE},", "(l.last_start IS NULL OR o.start_ns < l.last_start)"


def idle_breakdown(con: duckdb.DuckDBPyConnection, *, include_last_step: bool = True,
                   kernel_wait_ns: int = KERNEL_WAIT_NS) -> list[IdleShare]:
    """HTA's idle-time breakdown per rank, stream and category (categories with no gap are
    left out, as HTA's groupby does)."""
    cte, keep = _kept(con, include_last_step)
    join = "LEFT JOIN ops o ON o.rank = k.rank AND o.id = k.launch_id"
    if cte:
        join = ("JOIN ops o ON o.rank = k.rank AND o.id = k.launch_id "
                "LEFT JOIN last_step l ON l.rank = k.rank")
    rows = con.execute(f"""
        WITH {cte}
        ev AS (
            SELECT k.rank, k.stream, k.start_ns, k.start_ns + greatest(k.dur_ns, 0) AS end_ns,
                   o.start_ns AS launch_ns
            FROM kernels k {join}
            WHERE k.kind <> 'sync' AND k.stream IS NOT NULL AND {keep}),
        gaps AS (
            SELECT rank, stream, launch_ns,
                   start_ns - lag(end_ns) OVER w AS gap,
                   lag(end_ns) OVER w AS prev_end
            FROM ev WINDOW w AS (PARTITION BY rank, stream ORDER BY start_ns, end_ns)),
        typed AS (
            SELECT rank, stream, gap,
                   CASE WHEN launch_ns > prev_end THEN 'host_wait'
                        WHEN gap < {int(kernel_wait_ns)} THEN 'kernel_wait'
                        ELSE 'other' END AS category
            FROM gaps WHERE gap IS NOT NULL)
        SELECT rank, stream, category, sum(gap)::BIGINT, count(*),
               sum(gap) / sum(sum(gap)) OVER (PARTITION BY rank, stream)
        FROM typed GROUP BY rank, stream, category ORDER BY rank, stream, category
    """).fetchall()
    return [IdleShare(int(r), int(s), c, int(ns), float(ratio or 0.0), int(n))
            for r, s, c, ns, n, ratio in rows]


def idle_totals(shares: list[IdleShare]) -> dict[int, dict[str, int]]:
    """Idle ns per rank and category, summed over streams."""
    out: dict[int, dict[str, int]] = {}
    for s in shares:
        per = out.setdefault(s.rank, dict.fromkeys(IDLE_CATEGORIES, 0))
        per[s.category] += s.idle_ns
    return out


def launch_pairs_sql(con: duckdb.DuckDBPyConnection, *, include_last_step: bool = True,
                     include_memory: bool = True) -> str:
    """SQL of one row per (launching call, device event): rank, correlation, name of the
    event, op_id, launch start, cpu_ns, gpu_ns, delay_ns, event start."""
    names = _LAUNCH_NAMES + (_MEMORY_LAUNCH_NAMES if include_memory else ())
    cte, keep = _kept(con, include_last_step)
    last = "LEFT JOIN last_step l ON l.rank = o.rank" if cte else ""
    return f"""
        WITH {cte}
        pairs AS (
            SELECT o.rank, o.correlation, k.name, k.op_id, o.start_ns AS launch_ns,
                   o.dur_ns AS cpu_ns, k.dur_ns AS gpu_ns, k.start_ns,
                   greatest(k.start_ns - (o.start_ns + o.dur_ns), 0) AS delay_ns
            FROM ops o
            JOIN kernels k ON k.rank = o.rank AND k.correlation = o.correlation
            {last}
            WHERE o.cat IN ('cuda_runtime', 'cuda_driver') AND o.name IN ({_sql_list(names)})
              AND k.stream IS NOT NULL AND {keep})
        SELECT * FROM pairs"""


def launch_stats(con: duckdb.DuckDBPyConnection, *, include_last_step: bool = True,
                 include_memory: bool = True, runtime_cutoff_ns: int = RUNTIME_CUTOFF_NS,
                 delay_cutoff_ns: int = DELAY_CUTOFF_NS) -> list[LaunchStats]:
    """HTA's CUDA kernel launch statistics, summarized per rank."""
    pairs = launch_pairs_sql(con, include_last_step=include_last_step,
                             include_memory=include_memory)
    rows = con.execute(f"""
        SELECT rank, count(*), avg(cpu_ns), median(cpu_ns), avg(gpu_ns), avg(delay_ns),
               median(delay_ns), count(*) FILTER (WHERE gpu_ns < cpu_ns),
               count(*) FILTER (WHERE cpu_ns > {int(runtime_cutoff_ns)}),
               count(*) FILTER (WHERE delay_ns > {int(delay_cutoff_ns)})
        FROM ({pairs}) GROUP BY rank ORDER BY rank""").fetchall()
    return [LaunchStats(int(r[0]), int(r[1]), float(r[2]), float(r[3]), float(r[4]),
                        float(r[5]), float(r[6]), int(r[7]), int(r[8]), int(r[9]))
            for r in rows]


def queue_length(con: duckdb.DuckDBPyConnection, *,
                 include_last_step: bool = True) -> list[QueueLength]:
    """HTA's queue-length summary per rank and stream."""
    cte, keep = _kept(con, include_last_step)
    last = "LEFT JOIN last_step l ON l.rank = o.rank" if cte else ""
    rows = con.execute(f"""
        WITH {cte}
        launched AS (
            SELECT o.rank, k.stream, o.start_ns AS launch_ns, k.start_ns
            FROM ops o
            JOIN kernels k ON k.rank = o.rank AND k.correlation = o.correlation
            {last}
            WHERE o.cat IN ('cuda_runtime', 'cuda_driver')
              AND o.name IN ({_sql_list(_QUEUE_NAMES)}) AND k.stream IS NOT NULL AND {keep}),
        changes AS (
            SELECT rank, stream, launch_ns AS ts, 1 AS delta FROM launched
            UNION ALL
            SELECT rank, stream, start_ns AS ts, -1 AS delta FROM launched),
        series AS (
            SELECT rank, stream, ts,
                   sum(delta) OVER (PARTITION BY rank, stream ORDER BY ts, delta DESC
                                    ROWS UNBOUNDED PRECEDING) AS q,
                   lead(ts) OVER (PARTITION BY rank, stream ORDER BY ts, delta DESC) - ts
                       AS held_ns
            FROM changes)
        SELECT rank, stream, count(*), avg(q), stddev_samp(q), min(q),
               quantile_cont(q, 0.25), quantile_cont(q, 0.5), quantile_cont(q, 0.75), max(q),
               coalesce(sum(held_ns) FILTER (WHERE q >= {CUDA_MAX_QUEUE}), 0)::BIGINT
        FROM series GROUP BY rank, stream ORDER BY rank, stream""").fetchall()
    return [QueueLength(int(r[0]), int(r[1]), int(r[2]), float(r[3]),
                        None if r[4] is None else float(r[4]), int(r[5]), float(r[6]),
                        float(r[7]), float(r[8]), int(r[9]), int(r[10])) for r in rows]
