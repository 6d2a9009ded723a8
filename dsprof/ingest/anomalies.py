"""``raw/rank<R>/anomaly.json`` (written by collectors/anomaly.py) -> the ``anomalies`` table."""

from __future__ import annotations

from typing import Any

import orjson


def anomaly_rows(record: dict[str, Any], rank: int) -> dict[str, list[Any]]:
    out = record.get("output", {})
    frames = record.get("frames") or []
    return {
        "rank": [rank],
        "step": [record.get("step")],
        "ts_ns": [record.get("ts_ns")],
        "op": [record.get("op")],
        "module": [record.get("module")],
        "phase": [record.get("phase")],
        "autograd_node": [record.get("autograd_node")],
        "site": [record.get("site")],
        "code": [frames[0].get("code") if frames else None],
        "kind": [record.get("kind")],
        "output_index": [record.get("output_index")],
        "shape": [orjson.dumps(out.get("shape", [])).decode()],
        "dtype": [out.get("dtype")],
        "numel": [out.get("numel")],
        "nan_count": [out.get("nan")],
        "inf_count": [out.get("inf")],
        "inputs": [orjson.dumps(record.get("inputs", []) + record.get("scalars", [])).decode()],
        "frames": [orjson.dumps(frames).decode()],
    }
