"""Rows for the operator and kernel grids: ops or kernels grouped by one key, with time,
count, FLOPs and Tensor Core use. Only GROUP BY views of the tables; no estimate is made here.
"""

from __future__ import annotations

from typing import Any

from dsprof.dashboard.source import RunSource

OP_GROUPS = {"name": "o.name", "shape": "o.name", "module": "coalesce(o.module, '(no module)')",
             "phase": "coalesce(o.phase, 'other')"}
"""How the operator grid can group ops: ``shape`` is TensorBoard's "group by input shape"
(one row per op name and input shapes)."""
MAX_ROWS = 5000


def op_rows(src: RunSource, by: str = "name") -> list[dict[str, Any]]:
    """cpu ops grouped by ``by`` (name, name + input shapes, module or phase): count, self
    and total ms, FLOPs, and, when kernels link to ops, their GPU time and Tensor Core share."""
    if not src.has("ops"):
        return []
    key = OP_GROUPS[by]
    shapes, shapes_key = "", ""
    if by == "shape":
        shapes = ", coalesce(o.input_shapes, '') AS input_shapes"
        shapes_key = ", input_shapes"
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
        SELECT {key} AS key{shapes}, count(*) AS count, round(sum(o.self_ns) / 1e6, 3) AS self_ms,
               round(sum(o.dur_ns) / 1e6, 3) AS total_ms,
               round(avg(o.dur_ns) / 1e3, 2) AS mean_us, sum(o.flops)::DOUBLE AS flops {gpu_cols}
        FROM ops o {gpu_join}
        WHERE o.cat = 'cpu_op'
        GROUP BY key{shapes_key} ORDER BY self_ms DESC, key LIMIT {MAX_ROWS}""")
    return rows.to_pylist()


def kernel_rows(src: RunSource, by: str = "name") -> list[dict[str, Any]]:
    """Kernels grouped by name, or by name and the op that launched them (``by="op"``,
    tb_plugin's "kernel name + op name"): kind (and category when present), count, total and
    mean time, share of all kernel time, Tensor Core flag and launch facts when present."""
    if not src.has("kernels"):
        return []
    cols = src.columns("kernels")
    source, op_col, op_key = "kernels", "", ""
    if by == "op" and "op_id" in cols and src.has("ops"):
        source = """(SELECT k.*, coalesce(o.name, '(no op)') AS op FROM kernels k
                     LEFT JOIN ops o ON o.rank = k.rank AND o.id = k.op_id)"""
        op_col, op_key = ", op", ", op"
    extra = ""
    if "tensor_core" in cols:
        extra += ", bool_or(tensor_core) AS tensor_core"
    if "category" in cols:
        extra += ", any_value(category) AS category"
    # Kineto's launch facts, when the trace carries them (kernel args "est. achieved
    # occupancy %", "blocks per SM", "registers per thread", "shared memory"): means weighted
    # by duration, as tb_plugin's kernel view computes them.
    aggs = {"occupancy": _weighted("occupancy", 1, "occupancy_pct"),
            "blocks_per_sm": _weighted("blocks_per_sm", 2, "blocks_per_sm"),
            "registers": "max(registers) AS registers",
            "shared_mem": "max(shared_mem) AS shared_mem_bytes"}
    extra += "".join(f", {agg}" for col, agg in aggs.items() if col in cols)
    rows = src.arrow(f"""
        SELECT name {op_col}, any_value(kind) AS kind, count(*) AS count,
               round(sum(dur_ns) / 1e6, 3) AS total_ms, round(avg(dur_ns) / 1e3, 2) AS mean_us,
               round(100.0 * sum(dur_ns) / sum(sum(dur_ns)) OVER (), 2) AS percent {extra}
        FROM {source} GROUP BY name {op_key}
        ORDER BY total_ms DESC, name LIMIT {MAX_ROWS}""")
    return rows.to_pylist()


def _weighted(col: str, digits: int, alias: str) -> str:
    """Duration-weighted mean of ``col`` over the kernels that carry it."""
    return (f"round(sum({col} * dur_ns) / nullif(sum(dur_ns) FILTER (WHERE {col} IS NOT NULL)"
            f", 0), {digits}) AS {alias}")
