"""The cupti kernel mode with a stand-in ``cupti`` module (no GPU here): records, clock offset,
the cupti_kernels table, silence on CPU, and the hand-over around real profiler windows."""

from __future__ import annotations

import logging
import sys
import types

import orjson

from dsprof.collectors.cupti_kernels import CuptiKernelCollector
from dsprof.collectors.device import Device
from dsprof.collectors.timeline import TimelineCollector
from dsprof.ingest.cupti_kernels import build_cupti_kernels
from dsprof.rundir import CUPTI_KERNELS_FILE
from dsprof.schema import CUPTI_KERNELS
from dsprof.settings import Settings

CPU = Device("cpu", None, "cpu", 1 << 30, None, 1)
GPU = Device("cuda", 0, "NVIDIA A100-SXM4-80GB", 80 << 30, "8.0", 1)
KERNEL, MEMCPY = 10, 1


def _fake_cupti(events: list[str]):
    """cupti.cupti as the collector uses it; kernels 'run' when the test calls ``run``."""
    m = types.ModuleType("cupti.cupti")
    m.ActivityKind = types.SimpleNamespace(CONCURRENT_KERNEL=KERNEL, MEMCPY=MEMCPY)
    m.state = {"enabled": False, "callbacks": None, "pending": []}
    m.get_timestamp = lambda: 5_000

    def register(requested, completed):
        events.append("register")
        assert requested() == (8 << 20, 0)
        m.state["callbacks"] = completed

    def enable(kind):
        events.append("enable")
        m.state["enabled"] = True

    def disable(kind):
        events.append("disable")
        m.state["enabled"] = False

    def flush(flag):
        events.append("flush")
        if m.state["pending"]:
            m.state["callbacks"](m.state["pending"])
            m.state["pending"] = []

    def run(name, start, end, kind=KERNEL):
        if m.state["enabled"]:
            m.state["pending"].append(types.SimpleNamespace(
                kind=kind, name=name, start=start, end=end, stream_id=7, device_id=0,
                correlation_id=len(m.state["pending"]) + 1))

    m.activity_register_callbacks, m.activity_enable = register, enable
    m.activity_disable, m.activity_flush_all, m.run = disable, flush, run
    pkg = types.ModuleType("cupti")
    pkg.cupti = m
    return pkg, m


def test_silent_and_off_on_cpu(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dsprof"):
        assert CuptiKernelCollector.open(CPU, tmp_path, lambda: 0) is None
    assert [r.getMessage() for r in caplog.records] == ["cupti kernel mode: no NVIDIA GPU; off"]


def test_records_kernels_only_with_the_run_clock_and_builds_the_table(tmp_path, monkeypatch):
    events: list[str] = []
    pkg, m = _fake_cupti(events)
    monkeypatch.setitem(sys.modules, "cupti", pkg)
    monkeypatch.setitem(sys.modules, "cupti.cupti", m)
    # a rank's device, settled on cuda:1 after the mode opened (collectors/device.py)
    device = Device("cuda", None, "", 0, None, 2, settled=False)
    col = CuptiKernelCollector.open(device, tmp_path, lambda: 1_000_005_000)
    device.index, device.settled = 1, True
    assert col.offset_ns == 1_000_000_000
    m.run("ampere_sgemm_128x64_nn", 6_000, 9_000)  # not started yet: not recorded
    col.resume()
    m.run("ampere_sgemm_128x64_nn", 10_000, 12_000)
    m.run("Memcpy HtoD", 12_000, 13_000, kind=MEMCPY)
    m.run("cutlass_80_tensorop_s1688gemm_64x64_32x6_nn_align4", 20_000, 23_000)
    assert col.finish() == 2
    assert events == ["register", "enable", "flush", "disable"]
    doc = orjson.loads((tmp_path / CUPTI_KERNELS_FILE).read_bytes())
    assert doc["device"] == 1
    table = CUPTI_KERNELS.build(build_cupti_kernels(doc, 0, [(4, 1_000_000_000, 1_000_015_000)]))
    rows = table.to_pylist()
    assert [r["start_ns"] for r in rows] == [1_000_010_000, 1_000_020_000]
    assert [r["dur_ns"] for r in rows] == [2_000, 3_000]
    assert [r["tensor_core"] for r in rows] == [False, True]
    assert [r["step"] for r in rows] == [4, None]


def test_mangled_kernel_names_are_written_as_kineto_writes_them(tmp_path, monkeypatch):
    # GIVEN CUPTI reporting an ATen kernel by its mangled symbol, and a cuBLAS kernel
    pkg, m = _fake_cupti([])
    monkeypatch.setitem(sys.modules, "cupti", pkg)
    monkeypatch.setitem(sys.modules, "cupti.cupti", m)
    col = CuptiKernelCollector.open(GPU, tmp_path, lambda: 5_000)
    col.resume()
    mangled = ("_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_11FillFunctorIfEENS_6detail"
               "5ArrayIPcLi1EEEEEviT0_T1_")
    for start in (100, 200):
        m.run(mangled, start, start + 50)
    m.run("ampere_sgemm_128x64_nn", 300, 400)
    # WHEN the run ends
    col.finish()
    # THEN the file holds the demangled name (the kernels table's spelling), classified
    doc = orjson.loads((tmp_path / CUPTI_KERNELS_FILE).read_bytes())
    aten = ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, "
            "at::detail::Array<char*, 1> >(int, at::native::FillFunctor<float>, "
            "at::detail::Array<char*, 1>)")
    assert doc["columns"]["name"] == [aten, aten, "ampere_sgemm_128x64_nn"]
    table = CUPTI_KERNELS.build(build_cupti_kernels(doc, 0, [])).to_pylist()
    assert [r["category"] for r in table] == ["elementwise", "elementwise", "gemm"]


def test_never_records_while_a_profiler_window_does(tmp_path):
    # GIVEN the timeline collector on CPU with hooks like the session's
    events: list[str] = []
    tl = TimelineCollector(Settings.load(env={}, wait=1, warmup=1, active=1), CPU, tmp_path)
    tl.before_profiler = lambda: events.append("pause")
    tl.after_profiler = lambda: events.append("resume")
    # WHEN the bootstrap capture, one window (steps 3) and the end run
    tl.start()
    events.append("bootstrap started")
    for step in range(5):
        tl.on_boundary(step)
        events.append(f"after step {step}")
    tl.finish()
    # THEN CUPTI is handed over before every profiler session and back after each one
    assert events[:3] == ["pause", "bootstrap started", "resume"]
    assert events.count("pause") == events.count("resume") == 2
    opened = [i for i, e in enumerate(events) if e == "pause"]
    closed = [i for i, e in enumerate(events) if e == "resume"]
    assert all(o < c for o, c in zip(opened, closed)) and closed[-1] < len(events) - 1
    assert [w.steps for w in tl.windows] == [[3]]
