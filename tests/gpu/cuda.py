"""Whether this machine can run the GPU tests, asked once (imports torch lazily)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def no_cuda_reason() -> str:
    """Empty when a CUDA device is usable, else why not (one line)."""
    import torch

    if not torch.cuda.is_available():
        build = torch.version.cuda or "none (CPU build)"
        return (f"no CUDA device: torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, CUDA {build})")
    if getattr(torch.version, "hip", None):
        return "ROCm device: these checks are written for NVIDIA CUDA"
    return ""


def is_hopper() -> bool:
    import torch

    return torch.cuda.get_device_capability()[0] == 9
