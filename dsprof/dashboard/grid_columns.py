"""Column definitions for the AG Grid tables: readable headers and values in human units.

A grid column named after a table field (``skew_ns``, ``in_bytes``, ``flops``) shows raw
integers (``231074000``, ``21004288``, ``2365150633984``) that nobody reads at a glance. The
cell keeps its number (so sorting and number filters still work) and a ``valueFormatter``
shows it in a unit: ns as ms, bytes as MiB, FLOPs with an SI prefix. The formatter uses only
``d3.format``, which dash-ag-grid provides to its function strings. Columns with no value in
any row are left out.
"""

from __future__ import annotations

from typing import Any

# d3 cell formatters; `params.value == null` leaves empty cells empty
_NULL = "params.value == null ? '' : "
_V = "Math.abs(params.value)"
# Bytes in binary units (KiB, MiB, GiB: the units the rest of dsprof prints); a mean of
# 127,044 us reads as 127.04 ms. Ternaries only: the grid evaluates these strings itself.
_BYTES = (f"{_V} >= 1073741824 ? d3.format(',.2f')(params.value / 1073741824) + ' GiB' : "
          f"{_V} >= 1048576 ? d3.format(',.1f')(params.value / 1048576) + ' MiB' : "
          f"{_V} >= 1024 ? d3.format(',.1f')(params.value / 1024) + ' KiB' : "
          "d3.format(',')(params.value) + ' B'")
_US = (f"{_V} >= 1000000 ? d3.format(',.3~f')(params.value / 1000000) + ' s' : "
       f"{_V} >= 1000 ? d3.format(',.2~f')(params.value / 1000) + ' ms' : "
       "d3.format(',.2~f')(params.value) + ' us'")
FORMATS = {
    "ns": _NULL + "d3.format(',.3~f')(params.value / 1000000) + ' ms'",
    "ms": _NULL + "d3.format(',.3~f')(params.value) + ' ms'",
    "us": _NULL + _US,
    "bytes": _NULL + _BYTES,
    "flops": _NULL + "d3.format('.3~s')(params.value) + ' FLOP'",
    "gbps": _NULL + "d3.format(',.1f')(params.value) + ' GB/s'",
    "pct": _NULL + "d3.format(',.1f')(params.value) + ' %'",
    "count": _NULL + "d3.format(',')(params.value)",
    "float": _NULL + "d3.format(',.3~f')(params.value)",
}
_HEADERS = {"flops": "FLOPs", "busbw_gbps": "bus bandwidth", "algbw_gbps": "algorithm bandwidth",
            "busbw_weighted_gbps": "bus bandwidth (time-weighted)", "peak_gbps": "link peak",
            "peak_pct": "% of link peak", "in_bytes": "message size", "message_bytes": "message size", "out_bytes": "output size",
            "bytes": "bytes", "gpu_ms": "GPU time", "self_ms": "self time",
            "total_ms": "total time", "mean_us": "mean", "tensor_core_pct": "on Tensor Cores",
            "percent": "% of kernel time", "skew_ns": "skew", "last_rank": "last rank",
            "call": "call #", "key": "name"}
_SUFFIX_UNIT = (("_ns", "ns"), ("_ms", "ms"), ("_us", "us"), ("_bytes", "bytes"),
                ("_gbps", "gbps"), ("_pct", "pct"), ("_per_sm", "float"))

GRID_DEFAULTS = {"sortable": True, "resizable": True, "filter": True, "flex": 1, "minWidth": 110,
                 "wrapHeaderText": True, "autoHeaderHeight": True}
"""Every grid's defaultColDef: long headers ("% of kernel time", "blocks per SM") wrap
instead of being cut to "% of kern..."."""


def unit_of(field: str) -> str | None:
    if field in ("bytes", "flops", "count", "percent", "calls", "tensors"):
        return {"percent": "pct", "calls": "count", "tensors": "count"}.get(field, field)
    for suffix, unit in _SUFFIX_UNIT:
        if field.endswith(suffix):
            return unit
    return None


def header(field: str) -> str:
    """``skew_ns`` -> ``skew``, ``in_bytes`` -> ``message size``, ``group_size`` -> ``group size``."""
    if field in _HEADERS:
        return _HEADERS[field]
    for suffix, _ in _SUFFIX_UNIT:
        if field.endswith(suffix):
            field = field[: -len(suffix)]
            break
    return field.replace("_", " ")


def column(field: str, **extra: Any) -> dict[str, Any]:
    """One column: header and formatter from the field name; ``extra`` overrides."""
    col: dict[str, Any] = {"field": field, "headerName": header(field)}
    unit = unit_of(field)
    if unit is not None:
        col["valueFormatter"] = {"function": FORMATS[unit]}
        col["type"] = "numericColumn"
        col["filter"] = "agNumberColumnFilter"
    return {**col, **extra}


def columns_for(rows: list[dict[str, Any]], columns: list[dict[str, Any]] | None = None
                ) -> list[dict[str, Any]]:
    """Column definitions for ``rows``: the given ones (or one per field of the first row),
    less every column no row has a value in."""
    if not rows:
        return []
    cols = columns if columns is not None else [column(k) for k in rows[0]]
    filled = {k for r in rows for k, v in r.items() if v is not None and v != ""}
    return [c for c in cols if c["field"] in filled]
