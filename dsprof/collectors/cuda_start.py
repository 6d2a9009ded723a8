"""The script's own CUDA start, which dsprof waits for instead of causing it.

Initialised CUDA reads ``CUDA_VISIBLE_DEVICES`` (and the allocator's settings) once and does
not survive a fork, so a profiler that initialises it as the script imports torch changes the
program. What dsprof needs from an initialised CUDA (the allocator's out-of-memory observer and
history, the device's facts) starts inside the script's initialisation instead
(:func:`when_cuda_starts`), and :func:`cuda_driver_initialised` tells, without initialising
anything, whether something had initialised the driver before the script did.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any

from dsprof.log import logger


def when_cuda_starts(call: Callable[[], Any]) -> None:
    """Run ``call`` now if the script has initialised CUDA, else inside the script's own CUDA
    initialisation (torch runs its queued calls there, before the first allocation), in this
    process only (a forked child inherits the queue). ``call`` never raises into torch's
    initialisation: a failure is one warning."""
    import torch

    pid = os.getpid()

    def guarded() -> None:
        if os.getpid() != pid:
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the script's CUDA must start regardless
            logger.warning("as CUDA started: %s failed: %s: %s",
                           getattr(call, "__qualname__", "a collector"),
                           type(exc).__name__, exc)

    queue = getattr(torch.cuda, "_lazy_call", None)
    if queue is None or torch.cuda.is_initialized():
        guarded()
    else:
        queue(guarded)


_CUDA_ERROR_NOT_INITIALIZED = 3


def cuda_driver_initialised() -> bool | None:
    """Whether this process has initialised the CUDA driver (``cuInit``), asked without
    initialising it: before ``cuInit`` the driver answers every call with
    CUDA_ERROR_NOT_INITIALIZED. None where the driver library cannot be loaded (no NVIDIA
    driver, ROCm). CUDA reads ``CUDA_VISIBLE_DEVICES`` once, at ``cuInit``."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return int(driver.cuDeviceGetCount(ctypes.byref(count))) != _CUDA_ERROR_NOT_INITIALIZED
    except (OSError, AttributeError):
        return None
