"""``dsprof.memory_summary(device=None)``: memory by category, in the user's own process.

Like ``torch.cuda.memory_summary()``, for any device: what is alive now, by category (from a
census of the tensors reachable from the caller's frames), the device's peak, and what held
memory at that peak. On an accelerator the allocator's own counters give the live total and the
peak; on CPU, which has no allocator counters, the peak comes from the last profiled window of
the running dsprof session (``dsprof run``), and is unknown otherwise.
"""

from __future__ import annotations

import sys
from typing import Any

from dsprof.collectors.memory_census import CATEGORIES, take_census


def memory_summary(device: Any = None) -> str:
    from dsprof.collectors import session as _session
    from dsprof.collectors.device import detect

    sess = _session.current()
    dev = sess.device if sess is not None and sess.device is not None else detect()
    name = _device_name(device, dev)
    census = take_census(0, sys._getframe(2))
    census.release()
    now: dict[str, int] = {}
    for (d, _p), (nbytes, cat, _m) in census.entries.items():
        if d == name:
            now[cat] = now.get(cat, 0) + nbytes
    live = sum(now.values())
    peak: int | None = None
    at_peak: dict[str, int] = {}
    note = ""
    if name != "cpu" and dev.cuda_ready():
        import torch

        idx = torch.device(name).index
        live = int(torch.cuda.memory_allocated(idx))
        peak = int(torch.cuda.max_memory_allocated(idx))
        note = "peak: the allocator's maximum since the last reset"
    mem = sess.memory if sess is not None else None
    if mem is not None and mem.last_window is not None:
        from dsprof.ingest.memory_window import peak_breakdown, window_cols

        trace, census_doc = mem.last_window
        found = peak_breakdown(window_cols(trace, census_doc)).get(name)
        if found is not None:
            if peak is None or found[0] >= peak:
                peak = found[0]
            at_peak = found[2]
            note = f"at the peak: the last profiled window (steps {census_doc['steps']})"
    if peak is None and not note:
        note = ("peak: unknown on CPU outside a profiled window (run the script under "
                "`dsprof run` to measure it)")
    return _render(name, live, now, peak, at_peak, note)


def _device_name(device: Any, dev: Any) -> str:
    if device is None:
        return "cpu" if not dev.is_accelerator else f"cuda:{dev.current_index() or 0}"
    text = str(device)
    if text == "cuda":
        return f"cuda:{dev.current_index() or 0}"
    return text


def _render(name: str, live: int, now: dict[str, int], peak: int | None,
            at_peak: dict[str, int], note: str) -> str:
    from dsprof.units import fmt_bytes

    width = 75
    lines = ["=" * width, f" dsprof memory summary, device {name}".ljust(width), "-" * width,
             f" {'Category':<24}| {'Live now':>14} | {'At peak':>14} |", "-" * width]
    for cat in CATEGORIES:
        if now.get(cat) or at_peak.get(cat):
            lines.append(f" {cat:<24}| {fmt_bytes(now.get(cat, 0)):>14} | "
                         f"{fmt_bytes(at_peak.get(cat)) if at_peak else '-':>14} |")
    total = (f" {'Total':<24}| {fmt_bytes(live):>14} | "
             f"{fmt_bytes(peak) if peak is not None else '-':>14} |")
    lines += ["-" * width, total, "=" * width, f" {note}"]
    if name == "cpu":
        lines.append(" live now: tensors reachable from the calling frames (CPU has no "
                     "allocator counters)")
    return "\n".join(lines) + "\n"
