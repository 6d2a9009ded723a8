"""Column helpers shared by the ingest builders: Kineto values (microsecond floats, thread ids of
any JSON type, numbers that may be anything) -> typed numpy / Arrow columns, null where a value is
not what the column holds (one odd event never fails a trace).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
from msgspec import Raw


def to_ns(values: list[float], base_ns: int = 0) -> np.ndarray:
    """Kineto microseconds (int or float) -> int64 nanoseconds, without float64 rounding loss.

    Epoch microseconds times 1000 exceed 2**53, so the integer and fractional parts are
    converted separately.
    """
    arr = np.asarray(values, dtype=np.float64)
    whole = np.floor(arr)
    frac_ns = np.rint((arr - whole) * 1000.0).astype(np.int64)
    return whole.astype(np.int64) * 1000 + frac_ns + np.int64(base_ns)


def dur_ns(values: list[float]) -> np.ndarray:
    return np.maximum(np.rint(np.asarray(values, dtype=np.float64) * 1000.0), 0).astype(np.int64)


_tid_cache: dict[Any, int] = {}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def thread_id(tid: Any) -> int:
    """Integer thread id; numeric strings are parsed, other strings (and any value that is no
    int64) hashed (stable)."""
    cached = _tid_cache.get(tid)
    if cached is not None:
        return cached
    value = None
    if type(tid) is int:
        value = tid
    elif (isinstance(tid, str) and tid.lstrip("-").isdigit()) or \
            (type(tid) is float and math.isfinite(tid)):
        value = int(tid)
    if value is None or not _INT64_MIN <= value <= _INT64_MAX:
        value = zlib.crc32(str(tid).encode())
    _tid_cache[tid] = value
    return value


def thread_ids(tids: list[Any]) -> np.ndarray:
    """:func:`thread_id` of each element, computed once per distinct value."""
    if not set(map(type, tids)) <= {int, str, float, type(None)}:
        # a list or an object as a thread id: data, so its text names the thread
        tids = [t if isinstance(t, (int, str, float)) or t is None else str(t) for t in tids]
    ids = {t: thread_id(t) for t in set(tids)}
    return np.fromiter(map(ids.__getitem__, tids), np.int64, len(tids))


_INT_OR_NONE = {int, type(None)}
_NUMBER_OR_NONE = {int, float, type(None)}


def int_column(values: list[Any], *, floats: bool = False) -> pa.Int64Array:
    """Nullable int64 column: ints kept, anything else null (``floats``: floats truncated).

    The common case, a list of ints and Nones, goes to Arrow as it is, converted in C. A value
    that is no int64 (a bool, an int past 64 bits, an infinite float) is null for that event,
    never an error for the whole trace.
    """
    if set(map(type, values)) <= _INT_OR_NONE:
        try:
            return pa.array(values, pa.int64())
        except OverflowError:
            pass
    return pa.array([_int64(v, floats) for v in values], pa.int64())


def _int64(value: Any, floats: bool) -> int | None:
    if type(value) is float and floats and math.isfinite(value):
        value = int(value)
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return None


def float_column(values: list[Any]) -> pa.DoubleArray:
    """Nullable float64 column: ints and floats as floats, anything else null."""
    if not set(map(type, values)) <= _NUMBER_OR_NONE:
        values = [float(v) if isinstance(v, (int, float)) else None for v in values]
    return pa.array(values, pa.float64())


def int_values(column: pa.Array, fill: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls replaced by ``fill``, validity) of an Arrow integer column."""
    valid = np.ones(len(column), bool) if column.null_count == 0 else \
        column.is_valid().to_numpy(zero_copy_only=False)
    return column.fill_null(fill).to_numpy(), valid


def raw_strings(raws: list[Raw]) -> pa.LargeStringArray:
    """Raw JSON fields -> their text as an Arrow string column, null where the field was absent.

    Same values as ``[raw_text(r) for r in raws]``, but built from one join of the buffers.
    """
    n = len(raws)
    lens = np.fromiter(map(len, raws), np.int64, n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    valid = lens > 0
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    arr = pa.Array.from_buffers(pa.large_string(), n, [validity, pa.py_buffer(offsets),
                                                       pa.py_buffer(b"".join(raws))])
    arr.validate(full=True)  # UTF-8, as bytes.decode() would insist
    return arr


def strings_object_array(column: pa.Array) -> np.ndarray:
    """An Arrow string column as a numpy object array of str / None (one str per distinct
    value, shared by the rows that hold it)."""
    enc = column.dictionary_encode()
    values = np.array(enc.dictionary.to_pylist() + [None], dtype=object)
    return values[enc.indices.fill_null(len(values) - 1).to_numpy()]


def text_array(values: list[Any]) -> pa.StringArray:
    """A list of str / None (few distinct values, each shared by many rows: kernel names) as an
    Arrow string column, each distinct value encoded once (``pa.array`` of the list encodes
    every row: 8 ms for the 4,350 templated kernel names of hta_v100_1rank)."""
    distinct = list(dict.fromkeys(values))
    code = {v: i for i, v in enumerate(distinct)}
    rows = np.fromiter(map(code.__getitem__, values), np.int64, len(values))
    return pa.array(distinct, pa.string()).take(rows)


def positions(values: list[Any], target: Any) -> list[int]:
    """Indices of the elements of ``values`` equal to ``target`` (``list.index`` scans in C:
    ~10x a comprehension over a trace's 60k host names)."""
    out: list[int] = []
    at = -1
    try:
        while True:
            at = values.index(target, at + 1)
            out.append(at)
    except ValueError:
        return out
