"""The one place that asks which accelerator this process has.

Everything else calls :func:`detect` and the :class:`Device` it returns, so no other module
tests ``torch.cuda.is_available()``. ROCm builds report through the CUDA API (``torch.version.hip``
tells them apart). On a CPU-only machine every accelerator call is a no-op.

dsprof starts as the script imports torch, and nothing here initialises CUDA there: a script
that sets ``CUDA_VISIBLE_DEVICES`` after its ``import torch``, or forks workers that use CUDA,
must run as it does without dsprof (initialised CUDA is read once and does not survive a
fork). So :func:`detect` only counts the devices (NVML, or amdsmi, through
``torch.cuda.device_count()``); the device's facts (which one, its name, memory, capability)
are read by :meth:`Device.settle` once the script has initialised CUDA itself, and what needs
the allocator (its out-of-memory observer, its history) starts inside the script's own CUDA
initialisation (:func:`when_cuda_starts`). A run whose script never initialised CUDA trained
on the CPU, and says so (:meth:`Device.settle_on_cpu`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from dsprof.collectors import memory_history, peak_ledger
from dsprof.collectors.cuda_start import when_cuda_starts
from dsprof.frames import raised_in_signal_handler
from dsprof.log import logger


@dataclass
class Device:
    """Facts about the device a rank trains on.

    Args:
        kind: ``cpu``, ``cuda`` or ``rocm``.
        index: accelerator index (None on CPU).
        name: marketing name, or the CPU model.
        total_memory: bytes of device memory (host RAM on CPU).
        capability: CUDA compute capability, e.g. ``"9.0"`` (None elsewhere).
        count: number of accelerators visible to the process.
        settled: False while an accelerator's facts wait for the script's first CUDA call
            (index None, name "", total_memory 0 until then; :meth:`settle`).
    """

    kind: str
    index: int | None
    name: str
    total_memory: int
    capability: str | None
    count: int
    settled: bool = field(default=True, compare=False)

    @property
    def is_accelerator(self) -> bool:
        return self.kind != "cpu"

    def to_json(self) -> dict[str, Any]:
        facts = asdict(self)
        del facts["settled"]
        return facts

    def settle(self) -> bool:
        """Read the device's facts once the script has initialised CUDA (True when this call
        read them). Call it from the script's thread: CUDA's current device is per thread, and
        a rank's ``torch.cuda.set_device(local_rank)`` comes after CUDA's initialisation, so a
        step boundary is the first place where the device the script trains on is known."""
        if self.settled or not self.is_accelerator:
            return False
        import torch

        if not torch.cuda.is_initialized():
            return False
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        self.index, self.name, self.total_memory = index, props.name, int(props.total_memory)
        self.capability = f"{props.major}.{props.minor}"
        self.count = torch.cuda.device_count()
        self.settled = True
        return True

    def settle_on_cpu(self) -> None:
        """The script ended without initialising CUDA: it trained on the CPU."""
        cpu = _cpu_device()
        self.kind, self.index, self.name = cpu.kind, cpu.index, cpu.name
        self.total_memory, self.capability, self.count = cpu.total_memory, None, cpu.count
        self.settled = True

    def current_index(self) -> int | None:
        """The device the script trains on now, for the allocator's counters. The session
        starts at the script's ``import torch``, while the current device is still 0: a rank
        that then calls ``torch.cuda.set_device(local_rank)`` allocates on its own device, and
        device 0's counters in its process would read (almost) nothing. So the current device once
        CUDA is initialised, else the one seen at start."""
        import torch

        return torch.cuda.current_device() if torch.cuda.is_initialized() else self.index

    def cuda_ready(self) -> bool:
        """An accelerator the script has initialised: its allocator can be read without
        dsprof initialising CUDA (every torch.cuda call below would)."""
        if not self.is_accelerator:
            return False
        import torch

        return torch.cuda.is_initialized()

    def reset_peak(self) -> None:
        """Start the next step's peak; the script still reads its own (peak_ledger.py)."""
        if self.cuda_ready():
            peak_ledger.reset_for_step(self.current_index())

    def peak_allocated(self) -> int | None:
        """Peak bytes allocated since the last :meth:`reset_peak` (None on CPU, and before the
        script's first CUDA call: there is no allocator yet, and a script that never makes one
        is a CPU run)."""
        if not self.cuda_ready():
            return None
        return peak_ledger.step_peak(self.current_index())

    # -- memory (the allocator collector's window onto torch.cuda) -------------------------
    def memory_stats(self) -> dict[str, int] | None:
        """The allocator counters dsprof keeps from ``torch.cuda.memory_stats()`` (None on CPU).

        Keys: allocated, reserved, active, inactive_split (bytes, current), alloc_retries, ooms,
        device_allocs, device_frees (counts since the process started).
        """
        if not self.cuda_ready():
            return None
        import torch

        s = torch.cuda.memory_stats(self.current_index())
        return {k: int(s.get(src, 0)) for k, src in _STATS.items()}

    def start_memory_history(self, max_entries: int, cuda_starting: bool = False) -> bool:
        """Record every allocator action with its Python stack (a ring of ``max_entries``);
        True when dsprof records. torch initialises CUDA to start it, so before the script
        has, nothing starts: ``cuda_starting`` is the call made inside the script's
        initialisation (:func:`when_cuda_starts`), where ``is_initialized()`` still says
        False. A script recording its own history keeps it (collectors/memory_history.py)."""
        if not (cuda_starting and self.is_accelerator) and not self.cuda_ready():
            return False
        return memory_history.start(max_entries)

    def stop_memory_history(self) -> None:
        """End dsprof's recording (never the script's)."""
        if self.cuda_ready():
            memory_history.stop()

    def memory_snapshot(self) -> dict[str, Any] | None:
        """``torch.cuda.memory._snapshot()``: segments, blocks and the recorded trace (None on
        CPU, or where the script never initialised CUDA: nothing was allocated)."""
        if not self.cuda_ready():
            return None
        import torch

        return torch.cuda.memory._snapshot()

    def on_out_of_memory(self, callback: Any) -> bool:
        """Call ``callback()`` when the caching allocator raises out-of-memory (before the
        exception unwinds, while the blocks that filled memory are still allocated). torch
        initialises CUDA to attach it, so it is attached as the script initialises CUDA."""
        if not self.is_accelerator:
            return False
        import torch

        def observer(device: int, alloc: int, device_allocated: int, device_free: int) -> None:
            callback()

        when_cuda_starts(lambda: torch._C._cuda_attach_out_of_memory_observer(observer))
        return True


# memory_stats key -> torch.cuda.memory_stats() key ("allocation.*" counts allocations, the
# "*_bytes.*" keys sizes; the docstring's "allocated.*" spelling is wrong in torch 2.13)
_STATS = {
    "allocated": "allocated_bytes.all.current",
    "reserved": "reserved_bytes.all.current",
    "active": "active_bytes.all.current",
    "inactive_split": "inactive_split_bytes.all.current",
    "alloc_retries": "num_alloc_retries",
    "ooms": "num_ooms",
    "device_allocs": "num_device_alloc",
    "device_frees": "num_device_free",
}


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
    """The device this rank uses, without initialising CUDA (see the module's docstring): an
    accelerator whose facts wait for the script's first CUDA call (``settled`` False) when
    the process sees one, the current one where CUDA is initialised already (``dsprof.start()``
    late in a script), else the CPU."""
    import torch

    kind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
    if torch.cuda.is_initialized():
        device = Device(kind, None, "", 0, None, 0, settled=False)
        device.settle()
        return device
    try:
        # NVML (amdsmi on ROCm) first: no cuInit where it answers; CUDA's own count only
        # where it cannot, as torch.cuda.is_available() would
        count = int(torch.cuda.device_count())
    except Exception as exc:  # a broken driver is a CPU run, as without dsprof
        if raised_in_signal_handler(exc):
            raise  # the script's own signal handler's: it is the script's
        logger.debug("no accelerator: torch.cuda.device_count() raised %s: %s",
                     type(exc).__name__, exc)
        count = 0
    if count > 0:
        return Device(kind, None, "", 0, None, count, settled=False)
    return _cpu_device()


def _cpu_device() -> Device:
    return Device("cpu", None, _cpu_name(), int(psutil.virtual_memory().total), None,
                  os.cpu_count() or 1)


def precision_state() -> dict[str, Any]:
    """The fp32 math settings in force: whether matmuls and convolutions may use TF32.

    torch >= 2.9 has two ways to set them: the legacy flags (``allow_tf32``,
    ``set_float32_matmul_precision``) and ``fp32_precision`` ("ieee" | "tf32" | "none" =
    inherit). Once a script sets the new one, reading a legacy flag raises RuntimeError ("mix
    of the legacy and new APIs"), and this runs again when the script has ended: the new
    setting is read first, the legacy flag only when the new one says nothing, and nothing
    here raises (an unreadable flag is None).
    """
    import torch

    def read(get: Any) -> Any:
        try:
            return get()
        except (RuntimeError, AttributeError):
            return None

    def allowed(new: Any, legacy: Any) -> bool | None:
        mode = read(new)
        if mode in ("tf32", "ieee"):
            return mode == "tf32"
        flag = read(legacy)
        return None if flag is None else bool(flag)

    matmul = allowed(lambda: torch.backends.cuda.matmul.fp32_precision,
                     lambda: torch.backends.cuda.matmul.allow_tf32)
    cudnn = allowed(lambda: torch.backends.cudnn.conv.fp32_precision,
                    lambda: torch.backends.cudnn.allow_tf32)
    precision = read(torch.get_float32_matmul_precision)
    if precision is None and matmul is not None:
        precision = "high" if matmul else "highest"
    # torch.set_default_dtype(torch.float64) makes every new float tensor and parameter fp64:
    # the fp64 advice must undo that, since model.float() alone would leave the inputs fp64
    default = read(torch.get_default_dtype)
    return {"matmul_allow_tf32": matmul, "cudnn_allow_tf32": cudnn,
            "float32_matmul_precision": precision, "cpu_bf16": cpu_bf16(),
            "cpu_fp16": cpu_fp16(),
            "default_dtype": None if default is None else str(default).removeprefix("torch.")}


def cpu_bf16() -> str | None:
    """What runs bf16 matmuls on this CPU: ``amx`` (AMX tiles), ``avx512_bf16``, ``none``
    (bf16 is emulated: PyTorch's reference kernels convert each element), or None where the
    CPU's flags cannot be read (not Linux). The cpu_autocast analyzer prices by it."""
    flags = _cpu_flags()
    if flags is None:
        return None
    return "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "none"


def cpu_fp16() -> str | None:
    """The same for fp16: ``amx`` (AMX-FP16 tiles), ``avx512_fp16``, ``none`` (emulated: an
    AVX2 EPYC ran a 128x512 @ 512x512 fp16 matmul in 52 ms against 0.95 in fp32), or None."""
    flags = _cpu_flags()
    if flags is None:
        return None
    return "amx" if "amx_fp16" in flags else "avx512_fp16" if "avx512_fp16" in flags else "none"


def _cpu_flags() -> set[str] | None:
    """The first CPU's flags from /proc/cpuinfo, None where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def enable_tf32() -> None:
    """TF32 Tensor Cores for fp32 matmuls and convolutions (``DS_ENABLE_TENSOR_CORE=1``). A no-op
    for the arithmetic on CPUs and pre-Ampere GPUs; the flags are still recorded."""
    import torch

    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def nvml_bus_id(device: Device) -> str | None:
    """The PCI bus id NVML knows this rank's GPU by (CUDA and NVML number devices differently
    under CUDA_VISIBLE_DEVICES), or None on CPU/ROCm and before the device is settled."""
    if device.kind != "cuda" or device.index is None or not device.cuda_ready():
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
