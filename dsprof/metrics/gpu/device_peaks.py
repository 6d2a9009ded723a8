"""Peak dense FLOP/s of accelerators, by device name and the math mode a kernel used.

MFU is achieved FLOP/s over the peak for the dtype actually used, so the peak must be the
vendor's number for that mode: FP32 on CUDA cores, TF32 / FP16 / BF16 / FP8 on Tensor Cores
(AMD: matrix cores). Numbers are the vendors' datasheet peaks in TFLOP/s, **dense** (the
datasheets' "with sparsity" figures halved), at boost clock. An AMD MI250/MI250X package holds
two GCDs and PyTorch sees each as one device, so its per-device peaks are half the package's.

A name that matches no row is an unknown device: callers say so instead of guessing (the ROCm
trace in our test set calls its MI250 "AMD Radeon Graphics").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# math modes: what the arithmetic ran as
FP64, FP32, TF32, FP16, BF16, FP8 = "fp64", "fp32", "tf32", "fp16", "bf16", "fp8"


@dataclass(frozen=True)
class DevicePeak:
    """Args:
        name: the canonical device name.
        tflops: peak dense TFLOP/s per math mode (absent: the device has no such mode).
    """

    name: str
    tflops: dict[str, float]

    def peak_flops(self, mode: str) -> float | None:
        value = self.tflops.get(mode)
        return None if value is None else value * 1e12


# (pattern on the device name, peaks). First match wins: specific variants before families.
_PEAKS: tuple[tuple[re.Pattern[str], DevicePeak], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), DevicePeak(name, peaks)) for pattern, name, peaks in (
        (r"H200", "H200 SXM",
         {FP64: 34.0, FP32: 67.0, TF32: 494.7, FP16: 989.5, BF16: 989.5, FP8: 1979.0}),
        (r"H100.*PCIe", "H100 PCIe",
         {FP64: 26.0, FP32: 51.0, TF32: 378.0, FP16: 756.0, BF16: 756.0, FP8: 1513.0}),
        (r"H100", "H100 SXM",
         {FP64: 34.0, FP32: 67.0, TF32: 494.7, FP16: 989.5, BF16: 989.5, FP8: 1979.0}),
        (r"A100", "A100",
         {FP64: 9.7, FP32: 19.5, TF32: 156.0, FP16: 312.0, BF16: 312.0}),
        (r"A10\b|A10G", "A10",
         {FP32: 31.2, TF32: 62.5, FP16: 125.0, BF16: 125.0}),
        (r"\bL4\b", "L4",
         {FP32: 30.3, TF32: 60.0, FP16: 121.0, BF16: 121.0, FP8: 242.5}),
        (r"V100S", "V100S PCIe", {FP64: 8.2, FP32: 16.4, FP16: 130.0}),
        (r"V100.*PCIe", "V100 PCIe", {FP64: 7.0, FP32: 14.0, FP16: 112.0}),
        (r"V100", "V100 SXM2", {FP64: 7.8, FP32: 15.7, FP16: 125.0}),
        (r"\bT4\b", "T4", {FP32: 8.1, FP16: 65.0}),
        (r"MI300X", "MI300X",
         {FP64: 81.7, FP32: 163.4, TF32: 653.7, FP16: 1307.4, BF16: 1307.4, FP8: 2614.9}),
        (r"MI250X", "MI250X (one GCD)",
         {FP64: 47.9, FP32: 47.9, FP16: 191.5, BF16: 191.5}),
        (r"MI250", "MI250 (one GCD)",
         {FP64: 45.3, FP32: 45.3, FP16: 181.0, BF16: 181.0}),
    ))

# trace / torch dtype spellings -> math mode before Tensor Core promotion
_DTYPE_MODE = {
    "float": FP32, "float32": FP32, "torch.float32": FP32,
    "double": FP64, "float64": FP64, "torch.float64": FP64,
    "c10::half": FP16, "half": FP16, "float16": FP16, "torch.float16": FP16,
    "c10::bfloat16": BF16, "bfloat16": BF16, "torch.bfloat16": BF16,
    "c10::float8_e4m3fn": FP8, "c10::float8_e5m2": FP8, "float8_e4m3fn": FP8,
    "float8_e5m2": FP8,
}


def lookup(device_name: str | None) -> DevicePeak | None:
    """The peaks of a device by its reported name, or None when it is not in the table."""
    if not device_name:
        return None
    for pattern, peak in _PEAKS:
        if pattern.search(device_name):
            return peak
    return None


def known_devices() -> list[str]:
    return [peak.name for _, peak in _PEAKS]


def dtype_mode(dtype: str | None) -> str | None:
    """The math mode of an input dtype as the trace spells it ('float', 'c10::BFloat16')."""
    if dtype is None:
        return None
    return _DTYPE_MODE.get(dtype.strip().lower())


def math_mode(dtype: str | None, tensor_core: bool | None) -> str | None:
    """What the arithmetic ran as: fp32 on Tensor Cores is TF32; other dtypes keep their own
    mode (a non-Tensor-Core fp16 kernel still counts against the fp16 peak, which is how MFU
    is quoted)."""
    mode = dtype_mode(dtype)
    if mode == FP32 and tensor_core:
        return TF32
    return mode
