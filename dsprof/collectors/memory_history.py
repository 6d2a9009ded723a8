"""Who records the allocator's history: the script, or dsprof in its windows.

On a GPU dsprof records the caching allocator's history (``_record_memory_history``) while a
profiler window is open and stops it when the window ends. A script may record it too, to dump
its own snapshot (``torch.cuda.memory._dump_snapshot``: torchtitan's and torchtune's memory
profiling, PyTorch's memory-visualisation recipe). dsprof's start would then replace the
script's settings (its ``max_entries``, its stacks; torch clears the trace as it does) and its
stop would end the script's recording: the script's snapshot file would hold another history
than without dsprof.

So the two functions of ``torch._C`` that every ``_record_memory_history`` of torch ends in are
replaced for the session by ones that note who called them. While the script records, dsprof
leaves the history alone (a window then takes its memory from the profiler's events, without
the allocator's snapshot); dsprof stops only a recording it started, and a script that starts
one inside a dsprof window keeps it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dsprof.collectors.compile_watch import invisible_to_dynamo
from dsprof.frames import drop_own_frames

# torch._C's setters, new API (enabled: "all" | "state" | None) and legacy (enabled: bool)
_SETTERS = ("_cuda_record_memory_history", "_cuda_record_memory_history_legacy")

_originals: dict[str, Any] = {}
_ours = threading.local()  # set while dsprof itself calls torch's _record_memory_history
_state = {"script": False, "dsprof": False, "pid": None}


def install() -> None:
    """Watch the script's calls (a no-op without a CUDA build)."""
    import torch

    if _originals or not hasattr(torch._C, _SETTERS[0]):
        return
    _state.update(script=False, dsprof=False, pid=os.getpid())
    for name in _SETTERS:
        original = getattr(torch._C, name, None)
        if original is not None:
            _originals[name] = original
            setattr(torch._C, name, _watched(original))


def uninstall() -> None:
    import torch

    for name, original in _originals.items():
        setattr(torch._C, name, original)
    _originals.clear()


def script_records() -> bool:
    """The script has started a recording of its own that it has not stopped."""
    return bool(_state["script"])


def start(max_entries: int) -> bool:
    """dsprof's recording for a window; False where the script records (left alone)."""
    if _state["script"]:
        return False
    import torch

    with _dsprof_call():
        torch.cuda.memory._record_memory_history(
            "all", context="all", stacks="python", max_entries=max_entries)
    _state["dsprof"] = True
    return True


def stop() -> None:
    """End dsprof's recording, if it is still dsprof's."""
    if not _state["dsprof"]:
        return
    import torch

    with _dsprof_call():
        torch.cuda.memory._record_memory_history(None)
    _state["dsprof"] = False


@contextmanager
def _dsprof_call() -> Iterator[None]:
    _ours.active = True
    try:
        yield
    finally:
        _ours.active = False


def _watched(original: Any) -> Any:
    def record(enabled: Any, *args: Any, **kwargs: Any) -> Any:
        if not getattr(_ours, "active", False) and os.getpid() == _state["pid"]:
            # the script's call: its settings replace dsprof's, its recording is its own
            _state["script"] = bool(enabled)
            _state["dsprof"] = False
        try:
            return original(enabled, *args, **kwargs)
        except BaseException as exc:
            drop_own_frames(exc)  # the script's `except` prints what it prints plain
            raise

    record.__wrapped__ = original  # type: ignore[attr-defined]
    # compiled code that reads the counters runs this frame as plain Python: the same
    # graphs and breaks as where torch's own C function stands here
    return invisible_to_dynamo(record)
