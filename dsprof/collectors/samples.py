"""Host and GPU metrics sampled by a background thread for the whole run.

Every ``period_s`` (``DSPROF_SAMPLE_MS`` / ``--sample-ms``, 100 ms by default) the thread reads
the process CPU utilization and RSS (psutil, on every run) and, on an NVIDIA GPU with NVML
(``pynvml`` from ``nvidia-ml-py``, the ``[gpu]`` extra), the GPU's utilization, memory
utilization and use, power, SM clock and temperature, and on Hopper the GPM tensor and SM
activity. A sample costs about ten library calls (tens of microseconds): at 10 Hz the thread
uses well under 0.1 % of a core. Values are appended to lists; nothing is written until the
run ends (``raw/rank<R>/samples.json``, columns as lists), and nothing is computed.

Without a GPU, or without NVML, one INFO line says so and only the host is sampled. A metric the
GPU does not support (NVML "not supported") is dropped after its first failure. GPM metrics are
computed over intervals of at least 100 ms, NVML's refresh rate for GPM samples (nvml.h: the two
``nvmlGpmSampleGet`` calls should be more than 100 ms apart); at shorter sample periods a sample
repeats the last interval's values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil

from dsprof.hidden_threads import HiddenThread
from dsprof.log import logger
from dsprof.rundir import SAMPLES_FILE, atomic_write_bytes

GPM_MIN_INTERVAL_S = 0.1  # NVML refreshes GPM counters about every 100 ms
GPU_COLUMNS = ("gpu_util", "mem_util", "mem_used", "power_w", "sm_clock_mhz", "temp_c",
               "tensor_util", "sm_util")


class NvmlReader:
    """Reads one GPU through pynvml. Build it with :meth:`open`; None when there is no NVML."""

    def __init__(self, nvml: Any, handle: Any, index: int):
        self.nvml = nvml
        self.handle = handle
        self.index = index
        self.dead: set[str] = set()
        self._gpm: list[Any] | None = None
        self._gpm_at = time.monotonic()  # when the interval's first GPM sample was taken
        self._gpm_last: tuple[float, float] | tuple[None, None] = (None, None)
        try:
            support = nvml.nvmlGpmQueryDeviceSupport(handle)
            if support.isSupportedDevice:
                self._gpm = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
                nvml.nvmlGpmSampleGet(handle, self._gpm[0])
        except Exception:  # noqa: BLE001 - GPM is Hopper-only; older GPUs/drivers lack it
            self._gpm = None

    @classmethod
    def open(cls, bus_id: str | None, index: int | None) -> tuple[NvmlReader | None, str]:
        """(reader, why not) for the GPU at PCI ``bus_id`` (else NVML index ``index``)."""
        try:
            import pynvml
        except ImportError:
            return None, "pynvml is not installed (pip install 'dsprof[gpu]')"
        try:
            pynvml.nvmlInit()
            if bus_id:
                handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)
            else:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index or 0)
        except Exception as exc:  # noqa: BLE001 - NVMLError, a missing libnvidia-ml, ...
            return None, f"NVML unavailable ({type(exc).__name__}: {exc})"
        return cls(pynvml, handle, index or 0), ""

    def _get(self, name: str, read: Callable[[], Any]) -> Any:
        if name in self.dead:
            return None
        try:
            return read()
        except Exception:  # noqa: BLE001 - not supported on this GPU: stop asking
            self.dead.add(name)
            return None

    def read(self) -> dict[str, Any]:
        n, h = self.nvml, self.handle
        util = self._get("util", lambda: n.nvmlDeviceGetUtilizationRates(h))
        mem = self._get("mem", lambda: n.nvmlDeviceGetMemoryInfo(h))
        power = self._get("power_w", lambda: n.nvmlDeviceGetPowerUsage(h))
        out = {
            "gpu_util": None if util is None else float(util.gpu),
            "mem_util": None if util is None else float(util.memory),
            "mem_used": None if mem is None else int(mem.used),
            "power_w": None if power is None else power / 1000.0,
            "sm_clock_mhz": self._get("sm_clock_mhz",
                                      lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            "temp_c": self._get("temp_c", lambda: n.nvmlDeviceGetTemperature(
                h, n.NVML_TEMPERATURE_GPU)),
            "tensor_util": None,
            "sm_util": None,
        }
        if self._gpm is not None:
            if time.monotonic() - self._gpm_at >= GPM_MIN_INTERVAL_S:
                self._gpm_last = self._get("gpm", self._read_gpm) or (None, None)
            out["tensor_util"], out["sm_util"] = self._gpm_last
        return out

    def _read_gpm(self) -> tuple[float, float]:
        n = self.nvml
        prev, cur = self._gpm
        n.nvmlGpmSampleGet(self.handle, cur)
        get = n.c_nvmlGpmMetricsGet_t()
        get.version = n.NVML_GPM_METRICS_GET_VERSION
        get.numMetrics = 2
        get.sample1, get.sample2 = prev, cur
        get.metrics[0].metricId = n.NVML_GPM_METRIC_ANY_TENSOR_UTIL
        get.metrics[1].metricId = n.NVML_GPM_METRIC_SM_UTIL
        n.nvmlGpmMetricsGet(get)
        self._gpm = [cur, prev]  # the newest sample is the next interval's start
        self._gpm_at = time.monotonic()
        return float(get.metrics[0].value), float(get.metrics[1].value)

    def close(self) -> None:
        try:
            for sample in self._gpm or ():
                self.nvml.nvmlGpmSampleFree(sample)
            self.nvml.nvmlShutdown()
        except Exception as exc:  # noqa: BLE001 - shutting down: nothing left to save
            logger.debug("NVML shutdown: %s", exc)


class MetricSampler:
    """The sampling thread.

    Args:
        period_s: seconds between samples.
        raw_dir: where ``samples.json`` is written at :meth:`stop`.
        clock: epoch ns on the run clock (the step collector's ``now_ns``).
        gpu: an :class:`NvmlReader`, or None to sample the host only.
    """

    def __init__(self, period_s: float, raw_dir: Path, clock: Callable[[], int],
                 gpu: NvmlReader | None):
        self.period_s = period_s
        self.raw_dir = raw_dir
        self.clock = clock
        self.gpu = gpu
        self._pending_gpu: tuple[str | None, int | None] | None = None  # (bus id, index)
        self.columns: dict[str, list[Any]] = {c: [] for c in ("ts_ns", "cpu_util", "rss_bytes",
                                                            *GPU_COLUMNS)}
        self._stop = threading.Event()
        # not in the script's threading.enumerate() (dsprof/hidden_threads.py)
        self._thread = HiddenThread(self._loop, "dsprof-sampler")
        self._process = psutil.Process()

    def watch_gpu(self, device: Any, bus_id: str | None, now: bool = True) -> None:
        """Sample ``device`` (an NVIDIA GPU) from now on; one INFO line when NVML cannot.
        ``now=False`` (a step boundary in the script's thread): NVML is opened by the sampling
        thread at its next sample, so the step does not pay for ``nvmlInit``."""
        if now:
            self._open_gpu(bus_id, device.index)
        else:
            self._pending_gpu = (bus_id, device.index)

    def _open_gpu(self, bus_id: str | None, index: int | None) -> None:
        gpu, why = NvmlReader.open(bus_id, index)
        if gpu is None:
            logger.info("device metrics: %s; sampling host CPU and memory only", why)
        self.gpu = gpu

    def start(self) -> None:
        self._process.cpu_percent(None)  # the first call only sets the baseline
        self._thread.start()

    def sample(self) -> None:
        if self._pending_gpu is not None:
            pending, self._pending_gpu = self._pending_gpu, None
            self._open_gpu(*pending)
        row: dict[str, Any] = {"ts_ns": self.clock(),
                               "cpu_util": self._process.cpu_percent(None),
                               "rss_bytes": self._process.memory_info().rss}
        row.update(self.gpu.read() if self.gpu is not None else dict.fromkeys(GPU_COLUMNS))
        for key, values in self.columns.items():
            values.append(row[key])

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - the sampler must not disturb the run
                logger.warning("metric sampler stopped: %s: %s", type(exc).__name__, exc)
                return

    def stop(self) -> None:
        """Stop the thread, take a last sample, and write ``samples.json``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5 * self.period_s + 1)
        try:
            self.sample()
        except Exception as exc:  # noqa: BLE001 - keep what was sampled so far
            logger.debug("last metric sample failed: %s", exc)
        doc = {"device": None if self.gpu is None else self.gpu.index,
               "period_s": self.period_s, "columns": self.columns}
        atomic_write_bytes(self.raw_dir / SAMPLES_FILE, orjson.dumps(doc))
        if self.gpu is not None:
            self.gpu.close()


def start_sampler(period_s: float, raw_dir: Path, clock: Callable[[], int], device: Any,
                  bus_id: str | None) -> MetricSampler:
    """Open NVML if this rank has an NVIDIA GPU (one INFO line when it cannot) and start. A
    GPU whose facts wait for the script's first CUDA call (collectors/device.py) is sampled
    from the step boundary that settles them on (:meth:`MetricSampler.watch_gpu`)."""
    sampler = MetricSampler(period_s, raw_dir, clock, None)
    if device.kind == "cuda" and device.settled:
        sampler.watch_gpu(device, bus_id)
    elif device.kind != "cuda":
        logger.info("device metrics: no NVIDIA GPU; sampling host CPU and memory only")
    sampler.start()
    return sampler
