"""Typed decoding of Kineto trace JSON with msgspec.

Decoding into these structs skips every field dsprof does not read (flow events' ids, the
``Record function id`` of every op, stack strings...) instead of building a dict
for each, which is what makes ingest run at several hundred thousand events per second on two
cores (orjson's full decode of a 35 MB trace alone takes longer than our whole parse). Shapes
and types are kept as raw JSON text: they go to Parquet as text and are parsed only for the few
ops whose FLOPs we compute.

``Args`` and ``Event`` are declared ``gc=False``: a decoded trace is a tree of plain values that
can never form a reference cycle, and leaving its ~100k structs out of the cyclic garbage
collector's lists saves the collector's repeated passes over them while a trace is decoded.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Args(msgspec.Struct, frozen=True, gc=False):
    external_id: Any = msgspec.field(default=None, name="External id")
    external_id_legacy: Any = msgspec.field(default=None, name="external id")
    seq: Any = msgspec.field(default=None, name="Sequence number")
    input_dims: msgspec.Raw = msgspec.field(default=msgspec.Raw(b""), name="Input Dims")
    # torch.autograd.profiler traces of early 2021 spell it with a lower-case d
    input_dims_early: msgspec.Raw = msgspec.field(default=msgspec.Raw(b""), name="Input dims")
    input_type: msgspec.Raw = msgspec.field(default=msgspec.Raw(b""), name="Input type")
    concrete: msgspec.Raw = msgspec.field(default=msgspec.Raw(b""), name="Concrete Inputs")
    correlation: Any = None
    device: Any = None
    stream: Any = None
    registers: Any = msgspec.field(default=None, name="registers per thread")
    shared_memory: Any = msgspec.field(default=None, name="shared memory")
    blocks_per_sm: Any = msgspec.field(default=None, name="blocks per SM")
    occupancy: Any = msgspec.field(default=None, name="est. achieved occupancy %")
    grid: msgspec.Raw = msgspec.Raw(b"")
    block: msgspec.Raw = msgspec.Raw(b"")
    nbytes: Any = msgspec.field(default=None, name="bytes")
    # [memory] instants
    device_type: Any = msgspec.field(default=None, name="Device Type")
    device_id: Any = msgspec.field(default=None, name="Device Id")
    mem_bytes: Any = msgspec.field(default=None, name="Bytes")
    addr: Any = msgspec.field(default=None, name="Addr")
    total_allocated: Any = msgspec.field(default=None, name="Total Allocated")
    total_reserved: Any = msgspec.field(default=None, name="Total Reserved")
    # collectives (record_param_comms and NCCL kernels)
    collective: Any = msgspec.field(default=None, name="Collective name")
    in_nelems: Any = msgspec.field(default=None, name="In msg nelems")
    out_nelems: Any = msgspec.field(default=None, name="Out msg nelems")
    group_size: Any = msgspec.field(default=None, name="Group size")
    comm_dtype: Any = msgspec.field(default=None, name="dtype")
    pg_name: Any = msgspec.field(default=None, name="Process Group Name")
    pg_desc: Any = msgspec.field(default=None, name="Process Group Description")
    # position of a host event in the profiler's own event list: gaps in it mean the trace was
    # down-sampled (HTA's trace_filter), so idle time between the kept events is not real
    ev_idx: Any = msgspec.field(default=None, name="Ev Idx")
    # python tracer
    python_id: Any = msgspec.field(default=None, name="Python id")
    python_parent_id: Any = msgspec.field(default=None, name="Python parent id")


NO_ARGS = Args()


class Event(msgspec.Struct, frozen=True, gc=False):
    ph: str = ""
    cat: Any = None
    name: Any = ""
    pid: Any = None
    tid: Any = None
    ts: float = 0.0
    dur: float = 0.0
    args: Args = NO_ARGS


class TraceDoc(msgspec.Struct):
    # each event's JSON, a slice of the decoded buffer: events.split_raw decodes them a chunk
    # at a time, so the trace is never held as structs all at once
    traceEvents: list[msgspec.Raw]
    schemaVersion: Any = None
    deviceProperties: Any = None
    distributedInfo: Any = None
    baseTimeNanoseconds: Any = None
    record_shapes: Any = None
    profile_memory: Any = None
    with_stack: Any = None
    displayTimeUnit: Any = None


DECODER = msgspec.json.Decoder(TraceDoc)
EVENTS_DECODER = msgspec.json.Decoder(list[Event])


def raw_text(raw: msgspec.Raw) -> str | None:
    """A Raw field's JSON text, or None when the field was absent."""
    return bytes(raw).decode() if len(raw) else None


def input_dims(args: Args) -> msgspec.Raw:
    """The recorded input shapes, under either spelling of the key."""
    return args.input_dims if len(args.input_dims) else args.input_dims_early
