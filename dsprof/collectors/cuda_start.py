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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dsprof.frames import raised_in_signal_handler
from dsprof.log import logger

NVML_AVAILABILITY = "PYTORCH_NVML_BASED_CUDA_CHECK"


@contextmanager
def availability_by_nvml() -> Iterator[None]:
    """Around dsprof's own ``torch.profiler`` preparation: torch's profiler asks
    ``torch.cuda.is_available()`` as it prepares a CUDA session, which initialises the driver
    (``cuInit``) unless ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, where it asks NVML (torch's docs:
    "will NOT poison fork"). Set for that call only, while the script has not initialised
    CUDA, and put back as it was."""
    import torch

    before = os.environ.get(NVML_AVAILABILITY)
    if before == "1" or torch.cuda.is_initialized():
        yield
        return
    os.environ[NVML_AVAILABILITY] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(NVML_AVAILABILITY, None)
        else:
            os.environ[NVML_AVAILABILITY] = before


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
        except Exception as exc:  # the script's CUDA must start regardless
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            logger.warning("as CUDA started: %s failed: %s: %s",
                           getattr(call, "__qualname__", "a collector"),
                           type(exc).__name__, exc)

    queue = getattr(torch.cuda, "_lazy_call", None)
    if torch.cuda.is_initialized():
        guarded()
    elif queue is not None:
        queue(guarded)
    else:  # a torch without the queue: leaving it undone beats initialising CUDA here
        logger.debug("torch.cuda has no _lazy_call: %s does not run",
                     getattr(call, "__qualname__", "a collector"))


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
