"""Settings a script makes in ``os.environ`` after dsprof's device check has read them.

dsprof starts when the script imports torch (:mod:`dsprof.collectors.torch_arrival`), so what the
script sets before that line counts as it does without dsprof: ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS`` (read once, as torch's thread pools load). On an accelerator one difference
is left: dsprof's device check (:func:`dsprof.collectors.device.detect`) initialises CUDA (or
ROCm) as torch loads, where a script may set ``CUDA_VISIBLE_DEVICES`` or
``PYTORCH_CUDA_ALLOC_CONF`` after its ``import torch`` and before its first CUDA call; without
dsprof that still counts, under dsprof it comes too late.

Until the device check waits for the script's first CUDA call, a run says so instead of
letting the difference pass: the variables' values when torch loaded are kept, and at the end
every one the script changed is named with what the run used instead (meta
``late_environment``, a summary note, a warning on stderr). On a CPU run nothing read them and
nothing is named.
"""

from __future__ import annotations

import os
from typing import Any

# read once, when CUDA (or ROCm) is initialised or its allocator starts
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def read_at_load() -> dict[str, str | None]:
    """The variables as CUDA read them: call it when dsprof has checked the device, as torch
    loads."""
    return {name: os.environ.get(name) for name in DEVICE_VARIABLES}


def set_too_late(at_load: dict[str, str | None], accelerator: bool) -> list[dict[str, Any]]:
    """``[{variable, set_to, read_as, used}]`` for each variable the script changed after
    dsprof's device check read it: ``read_as`` is the value in force then (None: unset),
    ``used`` what the run used instead. Nothing on a CPU run."""
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


def describe(item: dict[str, Any]) -> str:
    """One line for the summary and the warning."""
    name, set_to, used = item.get("variable"), item.get("set_to"), item.get("used")
    return (f"the script set {name}={set_to} after its import torch, where dsprof's device "
            f"check had initialised CUDA, which reads it once: this run used {used}, not "
            f"what the script asks for; set it before import torch or outside the script "
            f"({name}={set_to} dsprof run ...) to profile the program it runs without dsprof")
