"""Fuzz the trace and snapshot decoders: any input gives a run or one TraceFormatError (one
line and exit 2 at the command line), never a traceback, in bounded memory.

In-process through ``import_traces`` (what ``dsprof import`` calls) for speed; two inputs also
through the real command. About 30 s in all."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsprof.errors import DsprofError
from dsprof.ingest.importer import import_traces
from tests.conftest import REPO

FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))

_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=False), st.text(max_size=8))
_value = st.recursive(_scalar, lambda c: st.lists(c, max_size=3)
                      | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)
_int = st.one_of(st.integers(-10, 10**6), st.integers(-2**70, 2**70))
_num = st.one_of(_int, st.floats(allow_nan=True, allow_infinity=True))
_ARG_KEYS = ["External id", "correlation", "stream", "device", "Input Dims", "Input type",
             "Bytes", "Total Allocated", "Total Reserved", "Addr", "Device Id",
             "Collective name", "In msg nelems", "Out msg nelems", "dtype", "Group size",
             "Process Group Name", "Call stack", "Python id", "Sequence number", "grid",
             "block", "registers per thread", "shared memory", "est. achieved occupancy %",
             "Device Type", "Fwd thread id"]
_CATS = ["cpu_op", "kernel", "gpu_memcpy", "gpu_memset", "cuda_runtime", "cuda_driver",
         "user_annotation", "gpu_user_annotation", "python_function", "ac2g", "fwdbwd",
         "Kernel", "Runtime", "Operator", "[memory]"]
_NAMES = ["ProfilerStep#1", "ProfilerStep#x", "aten::mm", "aten::add_", "[memory]",
          "ncclKernel_AllReduce_RING_LL_Sum_float", "Optimizer.step#SGD.step",
          "c10d::allreduce_", "record_param_comms", "cudaLaunchKernel", "nn.Module: Linear_0"]
_event = st.fixed_dictionaries(
    {"ph": st.sampled_from(["X", "B", "E", "i", "s", "f", "M", "C"]),
     "cat": st.one_of(st.sampled_from(_CATS), st.text(max_size=4)),
     "name": st.one_of(st.sampled_from(_NAMES), st.text(max_size=10)),
     "ts": _num, "dur": _num,
     "pid": st.one_of(st.integers(-2, 5), st.text(max_size=3)),
     "tid": st.one_of(st.integers(-2, 5), st.text(max_size=3))},
    optional={"args": st.dictionaries(st.sampled_from(_ARG_KEYS), _value, max_size=6),
              "id": st.integers(0, 5)})
_trace = st.fixed_dictionaries({"traceEvents": st.lists(_event, max_size=14)}, optional={
    "distributedInfo": st.dictionaries(st.sampled_from(["rank", "world_size", "backend"]),
                                       _value, max_size=3),
    "deviceProperties": st.lists(st.dictionaries(
        st.sampled_from(["id", "name", "totalGlobalMem", "computeMajor", "numSms"]), _value,
        max_size=4), max_size=2),
    "baseTimeNanoseconds": _value, "schemaVersion": _value})

_frame = st.one_of(_value, st.fixed_dictionaries({}, optional={
    "filename": st.one_of(st.text(max_size=6), _int), "line": st.one_of(_int, st.text(max_size=2)),
    "name": st.one_of(st.text(max_size=6), st.none())}))
_size = st.one_of(_int, st.text(max_size=3), st.none())
_block = st.one_of(_value, st.fixed_dictionaries(
    {"size": _size, "state": st.sampled_from(["active_allocated", "inactive",
                                              "active_pending_free", "x"])},
    optional={"address": _size, "requested_size": _size, "frames": st.lists(_frame, max_size=3)}))
_segment = st.one_of(_value, st.fixed_dictionaries(
    {"address": _size, "total_size": _size, "blocks": st.one_of(st.lists(_block, max_size=3),
                                                                _value)},
    optional={"device": st.one_of(st.integers(-2, 3), st.integers(2**40, 2**41), st.text(max_size=2)),
              "allocated_size": _size, "stream": _int, "segment_type": st.text(max_size=5)}))
_entry = st.one_of(_value, st.fixed_dictionaries(
    {"action": st.sampled_from(["alloc", "free_requested", "free_completed", "segment_alloc",
                                "segment_free", "oom", "snapshot", "x"])},
    optional={"addr": _size, "size": _size, "stream": _int, "time_us": _num,
              "frames": st.lists(_frame, max_size=3), "device_free": _size}))
_snapshot = st.fixed_dictionaries({"segments": st.lists(_segment, max_size=4)}, optional={
    "device_traces": st.one_of(st.lists(st.lists(_entry, max_size=5), max_size=3), _value)})

_BASE = Path(tempfile.mkdtemp(prefix="dsprof-fuzz-"))
_count = [0]


def _import(name: str, data: bytes) -> None:
    """The library entry ``dsprof import`` uses: a run, or a DsprofError. Anything else fails."""
    _count[0] += 1
    src = _BASE / f"in{_count[0]}" / name
    src.parent.mkdir()
    src.write_bytes(data)
    out = _BASE / f"run{_count[0]}"
    try:
        run, _ = import_traces([src], out)
    except DsprofError as exc:
        assert "\n" not in str(exc).strip()
        assert not out.exists()
    else:
        assert run.tables()


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_START_MIB: dict[str, float] = {}


@pytest.fixture(autouse=True, scope="module")
def _mark_before_fuzzing():
    _START_MIB["before"] = _maxrss_mib()
    yield


@settings(FUZZ, max_examples=80)
@given(_trace, st.booleans())
def test_fuzz_kineto_documents(doc, gz):
    data = json.dumps(doc).encode()
    _import("trace.json.gz" if gz else "trace.json", gzip.compress(data) if gz else data)


@settings(FUZZ, max_examples=60)
@given(st.binary(max_size=600), st.sampled_from(["t.json", "t.json.gz", "t.raw.gz",
                                                   "s.pickle"]), st.booleans())
def test_fuzz_any_bytes(data, name, gz):
    _import(name, gzip.compress(data) if gz else data)


@settings(FUZZ, max_examples=60)
@given(_snapshot, st.sampled_from([2, 4, 5]))
def test_fuzz_cuda_snapshots(snap, protocol):
    _import("snapshot.pickle", pickle.dumps(snap, protocol=protocol))


@settings(FUZZ, max_examples=30)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 2000))
def test_fuzz_mutated_real_trace(patch, at):
    """Bytes of a small real trace overwritten somewhere: still a run or one line."""
    real = (REPO.parent / "shared" / "traces" / "hta_amd_mi250"
            / "mi250_minitoy_train_ROCm6_2_kineto.json.gz")
    if not real.exists():
        return
    data = bytearray(gzip.decompress(real.read_bytes()))
    at = at * len(data) // 2000
    data[at:at + len(patch)] = patch
    _import("mutated.json", bytes(data))


def test_fuzzing_stayed_in_bounded_memory():
    # every example above ran in this process: its high-water mark covers them all. The bound is
    # on what the fuzzing added to the mark this process had before this module's first test
    # (the tests run before it, in the same pytest process, set their own mark: real traces)
    assert _maxrss_mib() - _START_MIB["before"] < 1024


def test_cli_gives_one_line_and_exit_2_for_garbage(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for name, data in (("x.json", b'{"traceEvents": [{"ph": 5}]}'),
                       ("x.pickle", b"\x80\x04\x95" + os.urandom(64))):
        src = tmp_path / name
        src.write_bytes(data)
        proc = subprocess.run([sys.executable, "-m", "dsprof", "import", str(src), "-o",
                               str(tmp_path / f"run-{name}")], capture_output=True, text=True,
                              env=env, timeout=120, check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("dsprof: error: ") and proc.stderr.count("\n") == 1
        assert str(src) in proc.stderr
