"""``raw/rank<R>/cupti_kernels.json`` (the cupti kernel mode's records) -> ``cupti_kernels``."""

from __future__ import annotations

from typing import Any

import numpy as np

from dsprof.ingest.kernel_class import classify_names
from dsprof.ingest.steps import step_column


def build_cupti_kernels(doc: dict[str, Any], rank: int,
                        step_spans: list[tuple[int, int, int]]) -> dict[str, Any]:
    cols = doc.get("columns") or {}
    names = list(cols.get("name", []))
    n = len(names)
    start = np.asarray(cols.get("start_ns", []), dtype=np.int64)
    category, tensor_core = classify_names(names, ["compute"] * n)
    return {
        "rank": np.full(n, rank, np.int32),
        "step": step_column(start, step_spans),
        "device": list(cols.get("device", [doc.get("device")] * n)),
        "stream": list(cols.get("stream", [None] * n)),
        "name": names,
        "category": category,
        "tensor_core": tensor_core,
        "start_ns": start,
        "dur_ns": np.asarray(cols.get("dur_ns", []), dtype=np.int64),
        "correlation": list(cols.get("correlation", [None] * n)),
    }
