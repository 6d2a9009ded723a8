"""Accelerators: peak dense FLOP/s per math mode, memory bandwidth and interconnect, by the
device name torch or a trace reports. The one table of device figures in dsprof.

MFU is achieved FLOP/s over the peak for the dtype actually used, so the peak must be the
vendor's number for that mode: FP32 on CUDA cores, TF32 / FP16 / BF16 / FP8 on Tensor Cores
(AMD: matrix cores). Numbers are the vendors' datasheet peaks in TFLOP/s, **dense** (the
datasheets' "with sparsity" figures halved), at boost clock. An AMD MI250/MI250X package holds
two GCDs and PyTorch sees each as one device, so its per-device figures (FLOP/s and memory
bandwidth) are half the package's (docs/decisions.md).

Matching is exact on the model token, never a substring: the name is split into tokens
(``"NVIDIA L40S"`` -> ``NVIDIA, L40S``), the model token must equal a row's model, and a row
may further require a variant token (``PCIE``, ``NVL``, ``80GB``). So ``L4`` never matches an
L40 or L40S, and an H100 PCIe never gets SXM figures. A name that matches no row is an
unknown device: callers say so instead of guessing (the ROCm trace in our test set calls its
MI250 "AMD Radeon Graphics").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# math modes: what the arithmetic ran as
FP64, FP32, TF32, FP16, BF16, FP8 = "fp64", "fp32", "tf32", "fp16", "bf16", "fp8"
MATH_MODES = (FP64, FP32, TF32, FP16, BF16, FP8)


@dataclass(frozen=True)
class DevicePeak:
    """Args:
        name: the canonical device name.
        tflops: peak dense TFLOP/s per math mode (absent: the device has no such mode).
        memory_gbps: peak memory bandwidth, GB/s (10^9 bytes/s), per device as torch sees it.
        link_gbps: interconnect bandwidth per direction, GB/s, and what the link is.
    """

    name: str
    tflops: dict[str, float]
    memory_gbps: float | None = None
    link: tuple[float, str] | None = field(default=None)

    def peak_flops(self, mode: str) -> float | None:
        value = self.tflops.get(mode)
        return None if value is None else value * 1e12

    @property
    def memory_bytes_s(self) -> float | None:
        return None if self.memory_gbps is None else self.memory_gbps * 1e9


_HOPPER = {FP64: 34.0, FP32: 67.0, TF32: 494.7, FP16: 989.5, BF16: 989.5, FP8: 1979.0}
_A100 = {FP64: 9.7, FP32: 19.5, TF32: 156.0, FP16: 312.0, BF16: 312.0}
_A10 = {FP32: 31.2, TF32: 62.5, FP16: 125.0, BF16: 125.0}
_NVLINK3, _NVLINK4 = (300.0, "NVLink 3"), (450.0, "NVLink 4")

# (model token, variant tokens (space-separated, all required) or None, figures). Within one model, rows with a variant come
# first; the row without one is the model's default (the SXM part where both exist).
_ROWS: tuple[tuple[str, str | None, DevicePeak], ...] = (
    ("H200", None, DevicePeak("H200 SXM", _HOPPER, 4800.0, _NVLINK4)),
    ("H100", "PCIE", DevicePeak(
        "H100 PCIe", {FP64: 26.0, FP32: 51.0, TF32: 378.0, FP16: 756.0, BF16: 756.0,
                      FP8: 1513.0}, 2000.0, (64.0, "PCIe 5.0 x16"))),
    ("H100", "NVL", DevicePeak(
        "H100 NVL", {FP64: 30.0, FP32: 60.0, TF32: 417.5, FP16: 835.5, BF16: 835.5,
                     FP8: 1670.5}, 3900.0, (300.0, "NVLink bridge"))),
    ("H100", None, DevicePeak("H100 SXM", _HOPPER, 3350.0, _NVLINK4)),
    ("A100", "PCIE 80GB", DevicePeak("A100 PCIe 80GB", _A100, 1935.0, (32.0, "PCIe 4.0 x16"))),
    ("A100", "PCIE", DevicePeak("A100 PCIe 40GB", _A100, 1555.0, (32.0, "PCIe 4.0 x16"))),
    ("A100", "80GB", DevicePeak("A100 SXM4 80GB", _A100, 2039.0, _NVLINK3)),
    ("A100", None, DevicePeak("A100 SXM4 40GB", _A100, 1555.0, _NVLINK3)),
    # A10G (AWS) is the same GA102 part; NVIDIA publishes no separate datasheet for it.
    ("A10G", None, DevicePeak("A10G", _A10, 600.0)),
    ("A10", None, DevicePeak("A10", _A10, 600.0)),
    ("L4", None, DevicePeak(
        "L4", {FP32: 30.3, TF32: 60.0, FP16: 121.0, BF16: 121.0, FP8: 242.5}, 300.0)),
    ("L40", None, DevicePeak(
        "L40", {FP32: 90.5, TF32: 90.5, FP16: 181.0, BF16: 181.0, FP8: 362.0}, 864.0)),
    ("L40S", None, DevicePeak(
        "L40S", {FP32: 91.6, TF32: 183.0, FP16: 362.0, BF16: 362.0, FP8: 733.0}, 864.0)),
    ("V100S", None, DevicePeak("V100S PCIe", {FP64: 8.2, FP32: 16.4, FP16: 130.0}, 1134.0,
                               (16.0, "PCIe 3.0 x16"))),
    ("V100", "PCIE", DevicePeak("V100 PCIe", {FP64: 7.0, FP32: 14.0, FP16: 112.0}, 900.0,
                                (16.0, "PCIe 3.0 x16"))),
    ("V100", None, DevicePeak("V100 SXM2", {FP64: 7.8, FP32: 15.7, FP16: 125.0}, 900.0,
                              (150.0, "NVLink 2"))),
    ("T4", None, DevicePeak("T4", {FP32: 8.1, FP16: 65.0}, 320.0)),
    # Pascal: no Tensor Cores; fp16 runs at twice the fp32 rate on the CUDA cores
    ("GP100", None, DevicePeak("Quadro GP100", {FP64: 5.2, FP32: 10.3, FP16: 20.7}, 717.0)),
    ("MI300X", None, DevicePeak(
        "MI300X", {FP64: 81.7, FP32: 163.4, TF32: 653.7, FP16: 1307.4, BF16: 1307.4,
                   FP8: 2614.9}, 5300.0)),
    # ROCm names an MI250X "AMD Instinct MI250X / MI250": the first model token wins.
    ("MI250X", None, DevicePeak(
        "MI250X (one GCD)", {FP64: 47.9, FP32: 47.9, FP16: 191.5, BF16: 191.5}, 1638.4)),
    ("MI250", None, DevicePeak(
        "MI250 (one GCD)", {FP64: 45.3, FP32: 45.3, FP16: 181.0, BF16: 181.0}, 1638.4)),
    ("MI210", None, DevicePeak(
        "MI210", {FP64: 45.3, FP32: 45.3, FP16: 181.0, BF16: 181.0}, 1638.4)),
)
_MODELS = {model for model, _, _ in _ROWS}

# trace / torch dtype spellings -> math mode before Tensor Core promotion
_DTYPE_MODE = {
    "float": FP32, "float32": FP32, "torch.float32": FP32,
    "double": FP64, "float64": FP64, "torch.float64": FP64,
    "c10::half": FP16, "half": FP16, "float16": FP16, "torch.float16": FP16,
    "c10::bfloat16": BF16, "bfloat16": BF16, "torch.bfloat16": BF16,
    "c10::float8_e4m3fn": FP8, "c10::float8_e5m2": FP8, "float8_e4m3fn": FP8,
    "float8_e5m2": FP8,
}


def _tokens(device_name: str) -> list[str]:
    return [t for t in re.split(r"[\s\-_/()]+", device_name.upper()) if t]


def lookup(device_name: str | None) -> DevicePeak | None:
    """The figures of a device by its reported name, or None when it is not in the table."""
    if not device_name:
        return None
    tokens = _tokens(device_name)
    model = next((t for t in tokens if t in _MODELS), None)
    if model is None:
        return None
    for row_model, variant, peak in _ROWS:
        if row_model == model and (variant is None or all(v in tokens for v in variant.split())):
            return peak
    return None


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
