"""Rows for the operator and kernel grids: ops or kernels grouped by one key, with time,
count, FLOPs and Tensor Core use. Only GROUP BY views of the tables; no estimate is made here.
"""

from __future__ import annotations

from typing import Any

from dsprof.dashboard.source import RunSource

OP_GROUPS = {"name": "o.name", "module": "coalesce(o.module, '(no module)')",
             "phase": "coalesce(o.phase, 'other')"}
MAX_ROWS = 5000


def op_rows(src: RunSource, by: str = "name") -> list[dict[str, Any]]:
    """cpu ops grouped by ``by`` (name, module or phase): count, self and total ms, FLOPs,
    and, when kernels link to ops, their GPU time and Tensor Core share."""
    if not src.has("ops"):
        return []
    key = OP_GROUPS[by]
    gpu_join, gpu_cols = "", ""
    kcols = src.columns("kernels")
    if "op_id" in kcols:
        has_tc = "tensor_core" in kcols
        tc = "sum(CASE WHEN tensor_core THEN dur_ns ELSE 0 END)" if has_tc else "NULL::BIGINT"
        gpu_join = f"""LEFT JOIN (SELECT rank, op_id, sum(dur_ns) AS gpu_ns, {tc} AS tc_ns
                       FROM kernels WHERE op_id IS NOT NULL GROUP BY rank, op_id) k
                       ON k.rank = o.rank AND k.op_id = o.id"""
        gpu_cols = ", round(sum(k.gpu_ns) / 1e6, 3) AS gpu_ms"
        if has_tc:
            gpu_cols += (", round(100.0 * sum(k.tc_ns) / nullif(sum(k.gpu_ns), 0), 1) "
                         "AS tensor_core_pct")
    rows = src.arrow(f"""
        SELECT {key} AS key, count(*) AS count, round(sum(o.self_ns) / 1e6, 3) AS self_ms,
               round(sum(o.dur_ns) / 1e6, 3) AS total_ms,
               round(avg(o.dur_ns) / 1e3, 2) AS mean_us, sum(o.flops)::DOUBLE AS flops {gpu_cols}
        FROM ops o {gpu_join}
        WHERE o.cat = 'cpu_op'
        GROUP BY key ORDER BY self_ms DESC, key LIMIT {MAX_ROWS}""")
    return rows.to_pylist()


def kernel_rows(src: RunSource) -> list[dict[str, Any]]:
    """Kernels grouped by name: kind (and category when present), count, total and mean time,
    share of all kernel time, Tensor Core flag when the run has it."""
    if not src.has("kernels"):
        return []
    cols = src.columns("kernels")
    extra = ""
    if "tensor_core" in cols:
        extra += ", bool_or(tensor_core) AS tensor_core"
    if "category" in cols:
        extra += ", any_value(category) AS category"
    rows = src.arrow(f"""
        SELECT name, any_value(kind) AS kind, count(*) AS count,
               round(sum(dur_ns) / 1e6, 3) AS total_ms, round(avg(dur_ns) / 1e3, 2) AS mean_us,
               round(100.0 * sum(dur_ns) / sum(sum(dur_ns)) OVER (), 2) AS percent {extra}
        FROM kernels GROUP BY name ORDER BY total_ms DESC, name LIMIT {MAX_ROWS}""")
    return rows.to_pylist()
