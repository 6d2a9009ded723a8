"""The metric sampler: host sampling on CPU, NVML reads through a stand-in pynvml module (no GPU
here), the one INFO line without NVML, and the device_samples table."""

from __future__ import annotations

import logging
import sys
import types

import orjson
import pytest

from dsprof.collectors import samples
from dsprof.collectors.device import Device
from dsprof.collectors.samples import MetricSampler, NvmlReader, start_sampler
from dsprof.errors import ConfigError
from dsprof.ingest.samples import build_device_samples
from dsprof.rundir import SAMPLES_FILE
from dsprof.schema import DEVICE_SAMPLES
from dsprof.settings import Settings

CPU = Device("cpu", None, "cpu", 1 << 30, None, 1)
GPU = Device("cuda", 0, "NVIDIA H100 80GB HBM3", 80 << 30, "9.0", 1)


def _fake_pynvml(gpm: bool) -> types.ModuleType:
    """The pynvml calls the sampler makes, answering like an H100 would."""
    m = types.ModuleType("pynvml")
    m.NVML_CLOCK_SM, m.NVML_TEMPERATURE_GPU = 1, 0
    m.NVML_GPM_METRICS_GET_VERSION, m.NVML_GPM_METRIC_ANY_TENSOR_UTIL = 1, 5
    m.NVML_GPM_METRIC_SM_UTIL = 2
    m.calls = []
    m.nvmlInit = lambda: m.calls.append("init")
    m.nvmlShutdown = lambda: m.calls.append("shutdown")
    m.nvmlDeviceGetHandleByPciBusId = lambda bus: ("handle", bus)
    m.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=41)
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=12 << 30)
    m.nvmlDeviceGetPowerUsage = lambda h: 512_000  # milliwatts
    m.nvmlDeviceGetClockInfo = lambda h, kind: 1980
    m.nvmlDeviceGetTemperature = lambda h, kind: 61

    def unsupported(*a):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    m.nvmlDeviceGetTemperature = unsupported if not gpm else m.nvmlDeviceGetTemperature
    m.nvmlGpmQueryDeviceSupport = lambda h: types.SimpleNamespace(isSupportedDevice=int(gpm))
    m.nvmlGpmSampleAlloc = lambda: object()
    m.nvmlGpmSampleGet = lambda h, s: None
    m.nvmlGpmSampleFree = lambda s: None

    class Metric:
        metricId = 0
        value = 0.0

    class MetricsGet:
        def __init__(self):
            self.metrics = [Metric(), Metric()]

    def metrics_get(get):
        for metric in get.metrics:
            metric.value = {5: 33.5, 2: 90.0}[metric.metricId]
        return get

    m.c_nvmlGpmMetricsGet_t = MetricsGet
    m.nvmlGpmMetricsGet = metrics_get
    return m


def test_cpu_samples_host_only_and_logs_one_info_line(tmp_path, caplog):
    clock = iter(range(1000, 10**9, 1000))
    with caplog.at_level(logging.INFO, logger="dsprof"):
        s = start_sampler(0.005, tmp_path, lambda: next(clock), CPU, None)
        s.sample()
        s.stop()
    assert [r.getMessage() for r in caplog.records] == [
        "device metrics: no NVIDIA GPU; sampling host CPU and memory only"]
    doc = orjson.loads((tmp_path / SAMPLES_FILE).read_bytes())
    cols = doc["columns"]
    assert doc["device"] is None and len(cols["ts_ns"]) >= 2
    assert cols["ts_ns"] == sorted(cols["ts_ns"]) and min(cols["rss_bytes"]) > 1 << 20
    assert set(cols["gpu_util"]) == {None}


def test_gpu_without_pynvml_says_why_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with caplog.at_level(logging.INFO, logger="dsprof"):
        s = start_sampler(10.0, tmp_path, lambda: 1, GPU, "00000000:07:00.0")
        s.stop()
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "pynvml is not installed" in msg and "dsprof[gpu]" in msg
    assert s.gpu is None


def test_a_gpu_settled_mid_run_is_opened_by_the_sampling_thread(monkeypatch, tmp_path):
    # GIVEN a session that started before the script's CUDA start (the device's facts wait
    # for it: collectors/device.py), with NVML present
    fake = _fake_pynvml(gpm=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    device = Device("cuda", None, "", 0, None, 2, settled=False)
    s = start_sampler(10.0, tmp_path, lambda: 1, device, None)
    try:
        assert fake.calls == [] and s.gpu is None  # nothing to read yet
        # WHEN a step boundary settles the device on cuda:1 (the rank's own)
        device.index, device.settled = 1, True
        s.watch_gpu(device, "00000000:8A:00.0", now=False)
        # THEN the script's thread opened nothing; the next sample opens that GPU by bus id
        assert fake.calls == [] and s.gpu is None
        s.sample()
        assert fake.calls == ["init"] and s.gpu.handle == ("handle", "00000000:8A:00.0")
        assert s.columns["gpu_util"][-1] == 87.0
    finally:
        s.stop()
    assert orjson.loads((tmp_path / SAMPLES_FILE).read_bytes())["device"] == 1


def test_nvml_reads_with_gpm_on_hopper(monkeypatch, tmp_path):
    fake = _fake_pynvml(gpm=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(samples, "GPM_MIN_INTERVAL_S", 0.0)
    reader, why = NvmlReader.open("00000000:07:00.0", 0)
    assert why == "" and reader.handle == ("handle", "00000000:07:00.0")
    row = reader.read()
    assert row == {"gpu_util": 87.0, "mem_util": 41.0, "mem_used": 12 << 30, "power_w": 512.0,
                   "sm_clock_mhz": 1980, "temp_c": 61, "tensor_util": 33.5, "sm_util": 90.0}
    sampler = MetricSampler(10.0, tmp_path, lambda: 5, reader)
    sampler.sample()
    sampler.stop()
    assert fake.calls[-1] == "shutdown"
    doc = orjson.loads((tmp_path / SAMPLES_FILE).read_bytes())
    table = DEVICE_SAMPLES.build(build_device_samples(doc, 3, [(7, 0, 100)]))
    assert table.num_rows == 2
    assert table.column("tensor_util").to_pylist() == [33.5, 33.5]
    assert table.column("step").to_pylist() == [7, 7] and set(table.column("rank").to_pylist()) == {3}


def test_gpm_intervals_are_at_least_nvmls_refresh_period(monkeypatch):
    # GIVEN a Hopper GPU whose GPM counters NVML refreshes every 100 ms
    fake = _fake_pynvml(gpm=True)
    computed = []
    metrics_get = fake.nvmlGpmMetricsGet
    fake.nvmlGpmMetricsGet = lambda get: computed.append(1) or metrics_get(get)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    now = [1000.0]
    monkeypatch.setattr(samples.time, "monotonic", lambda: now[0])
    reader, _ = NvmlReader.open(None, 0)
    # WHEN it is sampled every 31.25 ms (a binary fraction: exact sums)
    rows = []
    for _ in range(11):
        now[0] += 0.03125
        rows.append(reader.read())
    # THEN GPM metrics are computed once 100 ms have passed (samples 4 and 8), and the samples
    # in between repeat the last interval's values (none before the first interval ends)
    assert len(computed) == 2
    assert [r["tensor_util"] for r in rows[:3]] == [None] * 3
    assert {r["tensor_util"] for r in rows[3:]} == {33.5}
    assert rows[0]["gpu_util"] == 87.0  # the other metrics are read every time


def test_unsupported_metric_is_dropped_after_one_failure(monkeypatch):
    fake = _fake_pynvml(gpm=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    reader, _ = NvmlReader.open(None, 1)
    first, second = reader.read(), reader.read()
    assert first["temp_c"] is None and second["temp_c"] is None and "temp_c" in reader.dead
    assert first["tensor_util"] is None and first["gpu_util"] == 87.0  # no GPM before Hopper


def test_settings_knobs_and_the_ds_alias():
    s = Settings.load(env={"DS_ENABLE_TENSOR_CORE": "1", "DSPROF_SAMPLE_MS": "250"})
    assert s.tf32 and s.sample_ms == 250.0 and not s.cupti_kernels
    # the DSPROF_ name wins over the alias, and flags win over both
    assert not Settings.load(env={"DS_ENABLE_TENSOR_CORE": "1", "DSPROF_TF32": "0"}).tf32
    assert Settings.load(env={"DSPROF_SAMPLE_MS": "250"}, sample_ms=0.0).sample_ms == 0.0
    with pytest.raises(ConfigError, match="DSPROF_SAMPLE_MS"):
        Settings.load(env={"DSPROF_SAMPLE_MS": "-1"})
