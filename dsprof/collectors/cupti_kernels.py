"""Light whole-run kernel mode: every kernel's name, stream and times from CUPTI's activity API
(``cupti-python``), outside the profiler windows, for runs where a full torch.profiler window on
every step would be too heavy.

Only ``CONCURRENT_KERNEL`` records are enabled (no runtime API, no memcpy), so the cost is the
kernel records CUPTI buffers on the device side plus one Python call per 8 MiB buffer. CUPTI
allows one activity client at a time and Kineto (torch.profiler) is one: this collector is
paused (buffers flushed, kind disabled) before a profiler window is prepared and resumed (its
buffer callbacks registered again, since Kineto replaced them) after the window is saved, so the
two never record at the same time. Kernels inside windows are in the ``kernels`` table; the
ones here go to ``cupti_kernels``.

CUPTI timestamps are nanoseconds on CUPTI's own clock; the offset to the run clock is taken once
at start (``cupti.get_timestamp()`` against the step collector's clock). CUPTI names kernels by
their mangled symbol (``_ZN2at6native...``) where Kineto writes the demangled one, so names are
demangled when the file is written (torch's own demangler, once per distinct name), and the two
tables name the same kernel alike.

Importable anywhere: ``cupti`` is imported only when the mode starts on an NVIDIA GPU; on a CPU
or without cupti-python one INFO line says the mode is off.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from dsprof.log import logger
from dsprof.rundir import CUPTI_KERNELS_FILE, atomic_write_bytes

BUFFER_BYTES = 8 << 20


class CuptiKernelCollector:
    """Args:
        cupti: the ``cupti.cupti`` module.
        raw_dir: where ``cupti_kernels.json`` is written at :meth:`finish`.
        clock: epoch ns on the run clock.
        device: the rank's :class:`~dsprof.collectors.device.Device`; its index (read when the
            file is written, once the script's CUDA start settled it) is recorded with the
            kernels.
    """

    def __init__(self, cupti: Any, raw_dir: Path, clock: Callable[[], int], device: Any):
        self.cupti = cupti
        self.raw_dir = raw_dir
        self.device = device
        self.offset_ns = clock() - int(cupti.get_timestamp())
        self.active = False
        self.columns: dict[str, list[Any]] = {k: [] for k in (
            "name", "start_ns", "dur_ns", "stream", "device", "correlation")}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, device: Any, raw_dir: Path,
             clock: Callable[[], int]) -> CuptiKernelCollector | None:
        """The collector for this rank, or None (with one INFO line saying why)."""
        if device.kind != "cuda":
            logger.info("cupti kernel mode: no NVIDIA GPU; off")
            return None
        try:
            from cupti import cupti
        except ImportError as exc:
            logger.info("cupti kernel mode: cupti-python unavailable (%s; pip install "
                        "'dsprof[gpu]'); off", exc)
            return None
        return cls(cupti, raw_dir, clock, device)

    # -- CUPTI buffer callbacks (called on CUPTI's thread) --------------------------------
    def _buffer_requested(self) -> tuple[int, int]:
        return BUFFER_BYTES, 0

    def _buffer_completed(self, activities: list[Any]) -> None:
        kernel = self.cupti.ActivityKind.CONCURRENT_KERNEL
        rows = [(a.name, a.start + self.offset_ns, a.end - a.start, a.stream_id,
                 a.device_id, a.correlation_id) for a in activities if a.kind == kernel]
        if not rows:
            return
        with self._lock:
            for key, values in zip(self.columns, zip(*rows)):
                self.columns[key].extend(values)

    # -- lifecycle ------------------------------------------------------------------------
    def resume(self) -> None:
        """Record kernels (again): register the callbacks and enable kernel records."""
        if self.active:
            return
        self.cupti.activity_register_callbacks(self._buffer_requested, self._buffer_completed)
        self.cupti.activity_enable(self.cupti.ActivityKind.CONCURRENT_KERNEL)
        self.active = True

    def pause(self) -> None:
        """Hand CUPTI over (to the profiler): deliver what is buffered, stop recording."""
        if not self.active:
            return
        self.cupti.activity_flush_all(1)
        self.cupti.activity_disable(self.cupti.ActivityKind.CONCURRENT_KERNEL)
        self.active = False

    def finish(self) -> int:
        """Stop and write ``cupti_kernels.json``; returns the number of kernels recorded."""
        self.pause()
        with self._lock:
            self.columns["name"] = demangle_all(self.columns["name"])
            doc = {"device": self.device.index or 0, "columns": self.columns}
            n = len(self.columns["name"])
        atomic_write_bytes(self.raw_dir / CUPTI_KERNELS_FILE, orjson.dumps(doc))
        logger.debug("cupti kernel mode: %d kernels recorded outside profiler windows", n)
        return n


def demangle_all(names: list[str]) -> list[str]:
    """Itanium-mangled C++ symbols demangled as Kineto writes them; other names unchanged."""
    from torch._C import _demangle

    plain: dict[str, str] = {}
    for name in names:
        if name not in plain:
            plain[name] = _demangle(name) if name.startswith("_Z") else name
    return [plain[name] for name in names]
