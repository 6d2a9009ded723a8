"""No single event can sink an ingest: every per-event field that ingest derives something from
(shapes, arguments, ids, sizes, devices, collectives, thread ids) is given values of every wrong
kind in real traces, and the trace must still ingest with every event kept, the bad values as
nulls."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from dsprof.ingest.importer import import_traces
from dsprof.reports.summary import summarize
from dsprof.run import load
from tests.conftest import TRACES

# values of every JSON kind a field can hold, and numbers no int64 holds
BAD = [None, "", "x", [], [[]], [None], {"a": 1}, -1, 0, 1e300, float("inf"), "[0, 0]",
       [["x"]], [[-5, 2]], True, [1, [2]], "[", 2 ** 70]
HOST_KEYS = ["Input Dims", "Input dims", "Concrete Inputs", "Input type", "Sequence number",
             "External id", "external id", "correlation", "Python id", "Python parent id",
             "Bytes", "Addr", "Total Allocated", "Total Reserved", "Device Id", "Device Type"]
DEVICE_KEYS = ["registers per thread", "shared memory", "blocks per SM",
               "est. achieved occupancy %", "bytes", "stream", "device", "grid", "block",
               "correlation", "External id"]
COMM_KEYS = ["Collective name", "In msg nelems", "Out msg nelems", "Group size", "dtype",
             "Process Group Name", "Process Group Description", "Process Group Ranks"]


@pytest.fixture(scope="module")
def cpu_trace(tmp_path_factory) -> dict:
    """A real CPU training step (conv, linear, backward, Adam) with shapes, memory, stacks."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 4))
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path_factory.mktemp("trace") / "cpu.json"
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, profile_memory=True,
                 with_stack=True) as prof:
        model(x).sum().backward()
        opt.step()
    prof.export_chrome_trace(str(path))
    return json.loads(path.read_text())


def _shared(name: str) -> dict:
    path = TRACES / name
    if not path.exists():
        pytest.skip(f"shared trace {name} is absent (../shared/traces)")
    return json.loads(gzip.decompress(path.read_bytes()))


@pytest.fixture(scope="module")
def gpu_trace() -> dict:
    return _shared("hta_amd_mi250/mi250_minitoy_train_ROCm6_2_kineto.json.gz")


@pytest.fixture(scope="module")
def nccl_trace() -> dict:
    return _shared("hta_sampled_2rank_nccl/sampled_rank-0.json.gz")


_CLEAN_ROWS: dict[int, int] = {}  # id(doc) -> ops rows of its unspoiled ingest


def _spoil(doc: dict, key: str) -> tuple[dict, int]:
    """``doc`` with ``key`` of every event that has args set to the bad values in turn."""
    doc = json.loads(json.dumps(doc))
    spoiled = 0
    for event in doc["traceEvents"]:
        args = event.get("args")
        if isinstance(args, dict) and (key in args or event.get("ph") == "X"):
            args[key] = BAD[spoiled % len(BAD)]
            spoiled += 1
    return doc, spoiled


def _ingest(doc: dict, where: Path) -> int:
    """Ingest ``doc`` (as a user's trace) and return its ops rows; the summary must build."""
    where.mkdir()
    # orjson cannot write inf; the standard encoder writes it as Infinity, which Kineto never
    # does, so bad floats go in as 1e300 there
    text = json.dumps(doc).replace("Infinity", "1e300")
    (where / "trace.json").write_bytes(orjson.dumps(orjson.loads(text)))
    run_dir, _ = import_traces([where / "trace.json"], where / "run")
    with load(run_dir.path) as run:
        summarize(run)
        return run.sql("SELECT count(*) FROM ops")[0][0]


def _clean_rows(doc: dict, tmp_path: Path) -> int:
    if id(doc) not in _CLEAN_ROWS:
        _CLEAN_ROWS[id(doc)] = _ingest(doc, tmp_path / "clean")
    return _CLEAN_ROWS[id(doc)]


def _check(doc: dict, key: str, tmp_path: Path) -> None:
    clean_rows = _clean_rows(doc, tmp_path)
    spoiled, n = _spoil(doc, key)
    assert n > 0
    assert _ingest(spoiled, tmp_path / "spoiled") == clean_rows


@pytest.mark.parametrize("key", HOST_KEYS + ["tid"])
def test_cpu_trace_survives_bad_values(cpu_trace, key, tmp_path):
    if key == "tid":  # a thread id of every kind, on every event
        doc = json.loads(json.dumps(cpu_trace))
        for i, event in enumerate(doc["traceEvents"]):
            if event.get("ph") == "X":
                event["tid"] = BAD[i % len(BAD)]
        assert _ingest(doc, tmp_path / "spoiled") == _clean_rows(cpu_trace, tmp_path)
        return
    _check(cpu_trace, key, tmp_path)


@pytest.mark.parametrize("key", DEVICE_KEYS)
def test_gpu_trace_survives_bad_kernel_values(gpu_trace, key, tmp_path):
    _check(gpu_trace, key, tmp_path)


@pytest.mark.parametrize("key", COMM_KEYS)
def test_nccl_trace_survives_bad_collective_values(nccl_trace, key, tmp_path):
    _check(nccl_trace, key, tmp_path)
