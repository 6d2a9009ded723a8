"""The words for a device variable the script set after dsprof's start had initialised CUDA
(meta.json ``late_environment``, :mod:`dsprof.collectors.late_environment`): one line, said by
the session's warning at its end and by the summary's note, defined once for both."""

from __future__ import annotations

from typing import Any


def describe(item: dict[str, Any]) -> str:
    """One line for the summary and the warning."""
    name, set_to, used = item.get("variable"), item.get("set_to"), item.get("used")
    return (f"the script set {name}={set_to} after its import torch, where dsprof's start "
            f"had initialised CUDA, which reads it once: this run used {used}, not "
            f"what the script asks for; set it before import torch or outside the script "
            f"({name}={set_to} dsprof run ...) to profile the program it runs without dsprof")
