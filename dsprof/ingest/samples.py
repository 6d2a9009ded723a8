"""``raw/rank<R>/samples.json`` (the metric sampler's columns) -> the ``device_samples`` table."""

from __future__ import annotations

from typing import Any

import numpy as np

from dsprof.ingest.steps import step_column


def build_device_samples(doc: dict[str, Any], rank: int,
                         step_spans: list[tuple[int, int, int]]) -> dict[str, Any]:
    cols = doc.get("columns") or {}
    ts = np.asarray(cols.get("ts_ns", []), dtype=np.int64)
    n = len(ts)

    def col(name: str) -> list[Any]:
        values = cols.get(name)
        return values if values is not None and len(values) == n else [None] * n

    device = doc.get("device")
    return {
        "rank": np.full(n, rank, np.int32),
        "ts_ns": ts,
        "step": step_column(ts, step_spans),
        "device": [device] * n,
        "cpu_util": col("cpu_util"),
        "rss_bytes": col("rss_bytes"),
        "gpu_util": col("gpu_util"),
        "mem_util": col("mem_util"),
        "mem_used": col("mem_used"),
        "power_w": col("power_w"),
        "sm_clock_mhz": col("sm_clock_mhz"),
        "temp_c": col("temp_c"),
        "tensor_util": col("tensor_util"),
        "sm_util": col("sm_util"),
    }
