"""Settings a script makes in ``os.environ`` too late for this process to read them.

``python train.py`` loads torch when the script imports it, so a script may set
``OMP_NUM_THREADS=1`` at its top and then ``import torch``: the OpenMP runtime reads the
variable once, as the library loads, and torch runs one thread. Under ``dsprof run`` torch is
loaded before the script starts (dsprof's hooks are installed on it first), so the same line
comes too late: the run trains on torch's default threads, a different program from the one
the script asks for. The same holds on an accelerator for what CUDA reads once, when dsprof's
device check initialises it (``CUDA_VISIBLE_DEVICES``) and when its allocator starts
(``PYTORCH_CUDA_ALLOC_CONF``).

Until dsprof loads torch only when the script does, a run says so instead of letting the
difference pass: the variables' values when torch was loaded are kept, and at the end every
one the script changed is named with what the run used instead (meta ``late_environment``,
a summary note, a warning on stderr). A thread count the script then set itself
(``torch.set_num_threads``) matches and is not named.
"""

from __future__ import annotations

import os
from typing import Any

# read once, when the library loads (torch's OpenMP and MKL thread pools)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# read once, when CUDA (or ROCm) is initialised or its allocator starts
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def read_at_load() -> dict[str, str | None]:
    """The variables as torch (and, on an accelerator, CUDA) read them: call it when dsprof
    has loaded torch and checked the device, before the script runs."""
    return {name: os.environ.get(name) for name in (*THREAD_VARIABLES, *DEVICE_VARIABLES)}


def set_too_late(at_load: dict[str, str | None], threads: int,
                 accelerator: bool) -> list[dict[str, Any]]:
    """``[{variable, set_to, read_as, used}]`` for each variable the script changed after it
    was read: ``read_as`` is the value in force at load (None: unset), ``used`` what the run
    used instead (torch's thread count; on an accelerator, the value read at load)."""
    late = []
    for name, before in at_load.items():
        now = os.environ.get(name)
        if now == before or now is None:
            continue
        if name in THREAD_VARIABLES:
            if _threads(now) in (None, threads):  # unparsable, or set as asked after all
                continue
            late.append({"variable": name, "set_to": now, "read_as": before,
                         "used": f"{threads} thread{'s' if threads != 1 else ''}"})
        elif accelerator:  # on a CPU run nothing read them
            late.append({"variable": name, "set_to": now, "read_as": before,
                         "used": f"{name}={before}" if before is not None else f"{name} unset"})
    return late


def describe(item: dict[str, Any]) -> str:
    """One line for the summary and the warning."""
    name, set_to, used = item.get("variable"), item.get("set_to"), item.get("used")
    return (f"the script set {name}={set_to} after dsprof had loaded torch, which reads it "
            f"once: this run used {used}, not what the script asks for; set it outside "
            f"the script ({name}={set_to} dsprof run ...) to profile the program it runs "
            "without dsprof")


def _threads(value: str) -> int | None:
    try:
        n = int(value.strip().split(",")[0])
    except ValueError:
        return None
    return n if n > 0 else None
