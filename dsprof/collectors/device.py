"""The one place that asks which accelerator this process has.

Everything else calls :func:`detect` and the :class:`Device` it returns, so no other module
tests ``torch.cuda.is_available()``. ROCm builds report through the CUDA API (``torch.version.hip``
tells them apart). On a CPU-only machine every accelerator call is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class Device:
    """Facts about the device a rank trains on.

    Args:
        kind: ``cpu``, ``cuda`` or ``rocm``.
        index: accelerator index (None on CPU).
        name: marketing name, or the CPU model.
        total_memory: bytes of device memory (host RAM on CPU).
        capability: CUDA compute capability, e.g. ``"9.0"`` (None elsewhere).
        count: number of accelerators visible to the process.
    """

    kind: str
    index: int | None
    name: str
    total_memory: int
    capability: str | None
    count: int

    @property
    def is_accelerator(self) -> bool:
        return self.kind != "cpu"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def reset_peak(self) -> None:
        if self.is_accelerator:
            import torch

            torch.cuda.reset_peak_memory_stats(self.index)

    def peak_allocated(self) -> int | None:
        """Peak bytes allocated since the last :meth:`reset_peak` (None on CPU)."""
        if not self.is_accelerator:
            return None
        import torch

        return int(torch.cuda.max_memory_allocated(self.index))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def detect() -> Device:
    """The device this rank uses: the current CUDA/ROCm device if there is one, else the CPU."""
    import torch

    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        kind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
        return Device(kind, index, props.name, int(props.total_memory),
                      f"{props.major}.{props.minor}", torch.cuda.device_count())
    return Device("cpu", None, _cpu_name(), int(psutil.virtual_memory().total), None,
                  os.cpu_count() or 1)


def precision_state() -> dict[str, Any]:
    """The fp32 math settings in force: whether matmuls and convolutions may use TF32."""
    import torch

    return {"matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def enable_tf32() -> None:
    """TF32 Tensor Cores for fp32 matmuls and convolutions (``DS_ENABLE_TENSOR_CORE=1``). A no-op
    for the arithmetic on CPUs and pre-Ampere GPUs; the flags are still recorded."""
    import torch

    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def nvml_bus_id(device: Device) -> str | None:
    """The PCI bus id NVML knows this rank's GPU by (CUDA and NVML number devices differently
    under CUDA_VISIBLE_DEVICES), or None on CPU/ROCm."""
    if device.kind != "cuda" or device.index is None:
        return None
    import torch

    props = torch.cuda.get_device_properties(device.index)
    try:
        return f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    except AttributeError:  # older torch without the PCI fields
        return None


def profiler_activities(device: Device) -> list[Any]:
    """torch.profiler activities for this device: CPU always, CUDA when present."""
    from torch.profiler import ProfilerActivity

    acts = [ProfilerActivity.CPU]
    if device.is_accelerator:
        acts.append(ProfilerActivity.CUDA)
    return acts
