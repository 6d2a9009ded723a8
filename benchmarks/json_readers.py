"""Could a JSON reader dsprof already depends on turn a Kineto trace into columns faster than
ingest's split (issue 16)? Events per CPU second, one thread, and what each reader makes of the
traces' oddities.

Readers, each given the decompressed trace (``traceEvents`` to name / ph / cat / ts / dur / pid /
tid columns and ``args``), run interleaved in one process, least CPU time of ``-n``:

* ``dsprof split``: what ingest does today (``array_split.parse_split``: msgspec, a chunk of
  events at a time, into the SplitTrace columns, every ``args`` field the builders read).
* DuckDB ``read_json`` (``SET threads=1``): the whole document as one record with
  ``traceEvents`` typed and unnested; the ``traceEvents`` array alone in a file of its own
  (``format='array'``) with ``args`` as JSON, as a typed STRUCT, or as JSON with the 24 keys
  ingest reads extracted by exact name; and NDJSON (``format='newline_delimited'``).
* ``pyarrow.json`` on NDJSON (name, ph, cat, ts, dur only: see ``--checks``).
* ``orjson.loads``: the whole document to dicts, no column built.

The array file and the NDJSON are made before the clock starts (what making them costs is
printed apart): the NDJSON by replacing the text's newlines and every ``}``, ``{`` between two
events by a newline, which a ``}``, ``{`` inside a string would break. The files go to a
temporary directory (``/dev/shm`` where there is one), never into the repository.

    OMP_NUM_THREADS=1 python benchmarks/json_readers.py TRACE.json.gz [-n 5] [--checks]

``--checks`` compares DuckDB's columns with msgspec's decode of the same events (bit for bit
for the times) and feeds every reader a small document with the oddities of real traces.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dsprof.ingest.heap import prefer_system_allocator  # (before pyarrow loads)

prefer_system_allocator()

import duckdb
import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pj

from dsprof.ingest.array_split import parse_split
from dsprof.ingest.trace_file import read_bytes, read_mapped
from dsprof.ingest.trace_schema import Event

# the ``args`` keys ingest reads (trace_schema.Args), in each spelling a trace may use
ARGS_KEYS = [
    "External id", "external id", "Sequence number", "Input Dims", "Input dims", "Input type",
    "correlation", "device", "stream", "registers per thread", "shared memory",
    "blocks per SM", "est. achieved occupancy %", "grid", "block", "bytes", "Bytes", "Addr",
    "Total Allocated", "Total Reserved", "Collective name", "Device Type", "Device Id", "Ev Idx"]
# DuckDB refuses two STRUCT fields that differ only in case ("External id" / "external id",
# "bytes" / "Bytes", "Input Dims" / "Input dims"): the STRUCT holds one spelling of each
ARGS_STRUCT = (
    'STRUCT("External id" BIGINT, "Sequence number" BIGINT, "Input Dims" JSON, '
    '"Input type" JSON, correlation BIGINT, device BIGINT, stream BIGINT, '
    '"registers per thread" BIGINT, "shared memory" BIGINT, "blocks per SM" DOUBLE, '
    '"est. achieved occupancy %" DOUBLE, grid JSON, block JSON, bytes BIGINT, "Addr" BIGINT, '
    '"Total Allocated" BIGINT, "Total Reserved" BIGINT, "Collective name" VARCHAR, '
    '"Device Type" BIGINT, "Device Id" BIGINT, "Ev Idx" BIGINT)')
_BETWEEN = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")
_KEY = re.compile(rb'"traceEvents"[ \t\r\n]*:[ \t\r\n]*\[')


class _Events(msgspec.Struct):
    traceEvents: list[msgspec.Raw]


def columns(args: str, ids: str = "VARCHAR") -> str:
    """DuckDB's ``columns=`` for an event: the fields every reader gives, ``args`` as ``args``."""
    fields = {"name": "VARCHAR", "ph": "VARCHAR", "cat": "VARCHAR", "ts": "DOUBLE",
              "dur": "DOUBLE", "pid": ids, "tid": ids, "args": args}
    quoted = (v.replace("'", "''") for v in fields.values())
    return "{" + ", ".join(f"{k}: '{v}'" for k, v in zip(fields, quoted)) + "}"


def cut_array(text: bytes) -> bytes:
    """The ``traceEvents`` array alone (what a reader of arrays must be handed); it ends after
    its last event, found by msgspec's raw pass."""
    found = _KEY.search(text)
    assert found is not None, "no traceEvents array"
    last = msgspec.json.decode(text, type=_Events).traceEvents[-1]
    end = text.index(b"]", text.rfind(bytes(last)) + len(last))  # (the last copy of its text)
    return text[found.end() - 1:end + 1]


def ndjson(array: bytes) -> bytes:
    """The array's events one a line (wrong where a string holds ``}``, ``{``)."""
    return _BETWEEN.sub(b"}\n{", array[1:-1].replace(b"\n", b" "))


def readers(json_path: Path, array_path: Path, nd_path: Path) -> dict[str, Callable[[], Any]]:
    con = duckdb.connect()
    con.execute("SET threads=1")
    size = json_path.stat().st_size
    ev_list = ("STRUCT(name VARCHAR, ph VARCHAR, cat VARCHAR, ts DOUBLE, dur DOUBLE, "
               "pid VARCHAR, tid VARCHAR, args JSON)[]")
    whole = (f"SELECT unnest(traceEvents, recursive := true) FROM read_json('{json_path}', "
             f"columns={{traceEvents: '{ev_list}'}}, maximum_object_size={size + 1}, "
             "format='unstructured')")

    def duck(path: Path, fmt: str, args: str, select: str = "args", ids: str = "VARCHAR"
             ) -> Callable[[], pa.Table]:
        q = (f"SELECT name, ph, cat, ts, dur, pid, tid, {select} FROM read_json('{path}', "
             f"format='{fmt}', columns={columns(args, ids)}, maximum_object_size={size + 1})")
        return lambda: con.sql(q).to_arrow_table()

    keys = "[" + ", ".join(f"'$.\"{k}\"'" for k in ARGS_KEYS) + "]"
    nd_schema = pa.schema([("name", pa.string()), ("ph", pa.string()), ("cat", pa.string()),
                           ("ts", pa.float64()), ("dur", pa.float64())])

    def pyarrow_nd() -> pa.Table:
        return pj.read_json(nd_path, read_options=pj.ReadOptions(use_threads=False,
                                                                 block_size=1 << 24),
                            parse_options=pj.ParseOptions(explicit_schema=nd_schema,
                                                          unexpected_field_behavior="ignore"))

    return {
        "dsprof split (msgspec)": lambda: parse_split(json_path, [read_mapped(json_path)])[1],
        "duckdb whole document, unnest": lambda: con.sql(whole).to_arrow_table(),
        "duckdb array, 24 args keys extracted": duck(
            array_path, "array", "JSON", f"json_extract(args, {keys})", "JSON"),
        "duckdb array, args STRUCT": duck(array_path, "array", ARGS_STRUCT, "unnest(args)"),
        "duckdb array, args JSON": duck(array_path, "array", "JSON"),
        "duckdb NDJSON, args JSON": duck(nd_path, "newline_delimited", "JSON"),
        "pyarrow.json NDJSON (no pid/tid/args)": pyarrow_nd,
        "orjson.loads (dicts, no columns)": lambda: orjson.loads(json_path.read_bytes()),
    }


def least_cpu(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float | str]:
    """Least process CPU seconds of each function, the functions interleaved."""
    best: dict[str, float | str] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            if isinstance(best.get(name), str):
                continue
            start = time.process_time()
            try:
                out = fn()
            except Exception as exc:  # noqa: BLE001 - a reader's failure is a result
                best[name] = f"{type(exc).__name__}: {str(exc)[:120]}"
                continue
            took = time.process_time() - start
            del out
            prev = best.get(name)
            best[name] = took if not isinstance(prev, float) else min(prev, took)
    return best


def checks(text: bytes, array_path: Path, tmp: Path) -> None:
    """DuckDB's columns against msgspec's, then every reader on a document of oddities."""
    events = msgspec.json.decode(text, type=_Decoded).traceEvents
    con = duckdb.connect()
    con.execute("SET threads=1")
    got = con.sql(f"SELECT ts, dur, pid, tid, args FROM read_json('{array_path}', "
                  f"format='array', columns={columns(ARGS_STRUCT, 'JSON')}, "
                  "maximum_object_size=1000000000)").to_arrow_table()
    for field in ("ts", "dur"):
        theirs = got.column(field).to_numpy(zero_copy_only=False)
        ours = np.array([getattr(e, field) for e in events])
        have = ~np.isnan(theirs)  # (null: absent from the event, where msgspec gives 0.0)
        differ = int((theirs[have].view(np.int64) != ours[have].view(np.int64)).sum())
        print(f"  {field}: {differ} of {int(have.sum())} differ from msgspec's bit for bit "
              f"({int((~have).sum())} absent)")
    types = {c: sorted({type(json.loads(v)).__name__ for v in got.column(c).to_pylist() if v})
             for c in ("pid", "tid")}
    print(f"  pid / tid JSON types in the trace: {types}")
    args = got.column("args").combine_chunks()
    dims = args.field("Input Dims").to_pylist()
    raw = [bytes(e.args.input_dims).decode() or None for e in events]
    have = [i for i, r in enumerate(raw) if r is not None]
    same = sum(dims[i] == raw[i] for i in have)
    first = next((i for i in have if dims[i] != raw[i]), None)
    print(f"  Input Dims text as written: {same} of {len(have)}"
          + (f" (trace {raw[first]!r}, DuckDB {dims[first]!r})" if first is not None else ""))
    ext = args.field("External id").to_pylist()
    lost = sum(x is None and e.args.external_id_legacy is not None
               for x, e in zip(ext, events))
    print(f"  'external id' (lower case) values the STRUCT drops: {lost}")
    odd = (b'[{"ph": "X", "cat": "cpu_op", "name": "aten::mm \xc3\xa9 \xf0\x9f\x94\xa5", '
           b'"pid": 1, "tid": "7", "ts": 1712195495519689.047, "dur": 1.5},\n'
           b'{"ph": "X", "cat": "kernel", "name": "k", "pid": "Spans", "tid": 7, '
           b'"ts": "1712195495519690.125", "dur": 2},\n'
           b'{"ph": "X", "cat": "cpu_op", "name": "no times", "pid": 1, "tid": 7},\n'
           b'{"ph": "X", "cat": "cpu_op", "name": "big", "pid": 1, "tid": 7, "ts": 5, "dur": 1, '
           b'"args": {"Call stack": "' + b"x" * 2_000_000 + b'"}}]')
    # the same events with a number for every ts and tid
    clean = odd.replace(b'"ts": "1712195495519690.125"', b'"ts": 1712195495519690.125') \
        .replace(b'"tid": "7"', b'"tid": 7')
    for label, doc in (("oddities", odd), ("numbers only", clean),
                       ("numbers only, truncated", clean[:len(clean) // 3])):
        path = tmp / f"{len(label)}.json"
        path.write_bytes(doc)
        nd = tmp / f"{len(label)}.ndjson"
        nd.write_bytes(ndjson(doc.strip()))
        print(f"  {label} (name, ts, tid):")
        for name, fn in _odd_readers(con, path, nd):
            try:
                print(f"    {name:8s} {fn()}")
            except Exception as exc:  # noqa: BLE001 - a reader's refusal is a result
                print(f"    {name:8s} {type(exc).__name__}: {str(exc)[:150]}")


def _odd_readers(con: Any, path: Path, nd: Path) -> list[tuple[str, Callable[[], Any]]]:
    def duck() -> list[Any]:
        return [(r["name"], r["ts"], r["tid"]) for r in con.sql(
            f"SELECT * FROM read_json('{path}', format='array', "
            f"columns={columns('JSON', 'JSON')}, maximum_object_size=100000000)"
        ).to_arrow_table().to_pylist()]

    def arrow() -> list[Any]:
        # (a column is of one JSON type: a tid typed string refuses the numbers, and the reverse)
        schema = pa.schema([("name", pa.string()), ("ts", pa.float64()), ("tid", pa.int64())])
        return pj.read_json(nd, parse_options=pj.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore")).to_pylist()

    return [
        ("msgspec", lambda: [(e.name, e.ts, e.tid) for e in
                             msgspec.json.decode(path.read_bytes(), type=list[Event])]),
        ("duckdb", duck),
        ("pyarrow", arrow),
        ("orjson", lambda: [(e.get("name"), e.get("ts"), e.get("tid"))
                            for e in orjson.loads(path.read_bytes())])]


class _Decoded(msgspec.Struct):
    traceEvents: list[Event]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("-n", "--repeats", type=int, default=5)
    ap.add_argument("--checks", action="store_true", help="exactness and oddities (slow)")
    opts = ap.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    text = read_bytes(opts.trace)
    tmp = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        json_path, array_path, nd_path = tmp / "trace.json", tmp / "array.json", tmp / "nd.json"
        json_path.write_bytes(text)
        start = time.process_time()
        array = cut_array(text)
        cut = time.process_time() - start
        nd = ndjson(array)
        made = time.process_time() - start - cut
        array_path.write_bytes(array)
        nd_path.write_bytes(nd)
        del array, nd
        n = len(msgspec.json.decode(text, type=_Events).traceEvents)
        print(f"{opts.trace.name}: {n:,} events, {len(text) / 1e6:.1f} MB; least CPU of "
              f"{opts.repeats}, interleaved, one thread")
        print(f"  (not timed below: cutting the array out {cut * 1e3:.1f} ms, making the NDJSON "
              f"from it {made * 1e3:.1f} ms)")
        best = least_cpu(readers(json_path, array_path, nd_path), opts.repeats)
        split = best["dsprof split (msgspec)"]
        for name, took in best.items():
            if isinstance(took, str):
                print(f"  {name:40s} failed: {took}")
            else:
                ratio = f"{split / took:5.2f}x" if isinstance(split, float) else ""
                print(f"  {name:40s} {took * 1e3:7.1f} ms {n / took / 1e3:7.1f} k ev/CPU-s "
                      f"{ratio} the split's speed")
        if opts.checks:
            checks(text, array_path, tmp)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
