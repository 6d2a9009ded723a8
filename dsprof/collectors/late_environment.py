"""Settings a script makes in ``os.environ`` after dsprof's start, where CUDA may have read them.

dsprof starts when the script imports torch (:mod:`dsprof.collectors.torch_arrival`), so what the
script sets before that line counts as it does without dsprof: ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS`` (read once, as torch's thread pools load). On an NVIDIA GPU, CUDA reads
``CUDA_VISIBLE_DEVICES`` once, when its driver is initialised (ROCm its own two names). dsprof's
own calls wait for the script's CUDA start (:mod:`dsprof.collectors.cuda_start`), so a script that
sets one after its ``import torch`` and before its first CUDA call runs as without dsprof, unless
something in dsprof's start (the profiler's CUDA tracing, which NVIDIA's CUPTI runs) initialised
the driver first.

So the variables' values when torch loaded are kept, the session asks the driver, without
initialising it, whether it was initialised once the session had started (meta
``cuda_driver_at_start``), and at the end every variable the script changed is named with what
the run used instead (meta ``late_environment``, a summary note, a warning on stderr) where the
driver was initialised then, or could not be asked (ROCm, no driver library). On a CPU run
nothing read them and nothing is named.
"""

from __future__ import annotations

import os
from typing import Any

# read once, as the driver is initialised. The allocator's settings (PYTORCH_CUDA_ALLOC_CONF)
# are read by torch's allocator, which dsprof never starts before the script does: not here
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def read_at_load() -> dict[str, str | None]:
    """The variables as they were when torch loaded, before the script could change them."""
    return {name: os.environ.get(name) for name in DEVICE_VARIABLES}


def set_too_late(at_load: dict[str, str | None], accelerator: bool) -> list[dict[str, Any]]:
    """``[{variable, set_to, read_as, used}]`` for each variable the script changed after torch
    loaded: ``read_as`` is the value in force then (None: unset), ``used`` what the run used
    instead. Nothing where ``accelerator`` is False (a CPU run, or CUDA left to the script)."""
    if not accelerator:
        return []
    late = []
    for name, before in at_load.items():
        now = os.environ.get(name)
        if now == before or now is None:
            continue
        late.append({"variable": name, "set_to": now, "read_as": before,
                     "used": f"{name}={before}" if before is not None else f"{name} unset"})
    return late

