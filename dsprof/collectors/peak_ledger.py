"""The script's view of the allocator's peaks, kept whole while dsprof resets them every step.

dsprof reads each step's device peak (``steps.device_peak_bytes``) by resetting the caching
allocator's peak counters at every step boundary. Those counters are the script's too: a loop
that logs ``torch.cuda.max_memory_allocated()`` (HF's memory tracker, Lightning's
``DeviceStatsMonitor``, torchtitan's and torchtune's memory logs, a bare ``print``) would read the
last step's peak under dsprof where it reads the peak since its own reset (or the process's
start) without it: the same program printing other numbers.

So dsprof keeps a ledger: before each of its resets, every peak counter of the device is folded
into it, and whatever the script reads through torch (``torch.cuda.memory_stats``,
``max_memory_allocated``, ``memory_summary``, the ``torch.accelerator`` functions: all go
through the two stats functions of ``torch._C`` replaced here) has each peak raised to the
ledger's, which is what the counter would say had dsprof never reset it. A reset by the script
clears the ledger for its device, as it clears the counters. In a forked child the functions
are torch's own again (its allocator is its own).
"""

from __future__ import annotations

import os
from typing import Any

from dsprof.collectors.compile_watch import invisible_to_dynamo
from dsprof.frames import drop_own_frames

# torch._C's readers and resetters of the caching allocator's counters, by device index: the
# CUDA module's and the device-generic accelerator module's (torch >= 2.8)
_STATS = ("_cuda_memoryStats", "_accelerator_getDeviceStats")
_RESETS = ("_cuda_resetPeakMemoryStats", "_accelerator_resetPeakStats")

_held: dict[int, dict[tuple[str, ...], int]] = {}  # device -> stat path -> peak dsprof reset
# device -> the allocated-bytes peak a reset by the script cut out of the step in progress
_step_cut: dict[int, int] = {}
_originals: dict[str, Any] = {}
_pid: int | None = None


def install() -> None:
    """Put the ledger between the script and the counters (a no-op without a CUDA build)."""
    global _pid
    import torch

    if _originals or not hasattr(torch._C, _STATS[0]):
        return
    _pid = os.getpid()
    _held.clear()
    _step_cut.clear()
    for name in (*_STATS, *_RESETS):
        original = getattr(torch._C, name, None)
        if original is None:
            continue
        _originals[name] = original
        setattr(torch._C, name, (_reader if name in _STATS else _resetter)(original))


def uninstall() -> None:
    import torch

    for name, original in _originals.items():
        setattr(torch._C, name, original)
    _originals.clear()
    _held.clear()
    _step_cut.clear()


def raw_stats(device: int) -> dict[str, Any]:
    """The allocator's nested counters as they are (dsprof's own reads)."""
    import torch

    return (_originals.get(_STATS[0]) or torch._C._cuda_memoryStats)(device)


def step_peak(device: int) -> int:
    """The allocated-bytes peak of the step in progress: the counter's, or what a reset by the
    script cut off earlier in the step (torchtitan's and HF's trackers reset it themselves)."""
    peak = raw_stats(device).get("allocated_bytes", {}).get("all", {}).get("peak", 0)
    return max(int(peak), _step_cut.get(device, 0))


def reset_for_step(device: int) -> None:
    """dsprof's reset at a step boundary: the peaks so far are kept for the script first."""
    import torch

    fold(device, raw_stats(device))
    _step_cut.pop(device, None)
    (_originals.get(_RESETS[0]) or torch._C._cuda_resetPeakMemoryStats)(device)


def fold(device: int, stats: dict[str, Any]) -> None:
    """Keep each peak of ``stats`` (nested as torch returns them) where it is the highest."""
    held = _held.setdefault(device, {})
    for path, node in _peaks(stats, ()):
        if node["peak"] > held.get(path, -1):
            held[path] = node["peak"]


def _peaks(stats: dict[str, Any], path: tuple[str, ...]) -> Any:
    """(path, counter) for every counter of the nested stats that has a peak."""
    for key, value in stats.items():
        if isinstance(value, dict):
            if isinstance(value.get("peak"), int):
                yield (*path, str(key)), value
            else:
                yield from _peaks(value, (*path, str(key)))


def _reader(original: Any) -> Any:
    def stats(device: Any) -> Any:
        try:
            out = original(device)
        except BaseException as exc:
            drop_own_frames(exc)  # the script's `except` prints what it prints plain
            raise
        held = _held.get(device) if os.getpid() == _pid else None
        if held and isinstance(out, dict):
            for path, node in _peaks(out, ()):
                if held.get(path, -1) > node["peak"]:
                    node["peak"] = held[path]
        return out

    stats.__wrapped__ = original  # type: ignore[attr-defined]
    # compiled code that reads the counters runs this frame as plain Python: the same
    # graphs and breaks as where torch's own C function stands here
    return invisible_to_dynamo(stats)


def _resetter(original: Any) -> Any:
    def reset(device: Any) -> Any:
        if os.getpid() == _pid:
            _held.pop(device, None)
            # the script's reset starts its own peak; dsprof's step keeps what came before
            _step_cut[device] = step_peak(device)
        try:
            return original(device)
        except BaseException as exc:
            drop_own_frames(exc)  # the script's `except` prints what it prints plain
            raise

    reset.__wrapped__ = original  # type: ignore[attr-defined]
    # compiled code that reads the counters runs this frame as plain Python: the same
    # graphs and breaks as where torch's own C function stands here
    return invisible_to_dynamo(reset)
