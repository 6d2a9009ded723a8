"""Steps: which step each op belongs to, and the ``steps`` table's rows.

For an imported trace, a step is a ``ProfilerStep#N`` span (one row each). For a ``dsprof run``,
the step collector's ``session.json`` holds every boundary of the run, profiled or not; the
ProfilerStep spans dsprof emits in its windows give the ops their step.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa

from dsprof.ingest.disturbed import disturbed_reasons, in_loop_reasons, loop_edges, loop_index
from dsprof.schema.process import DATALOADERS

STEP_NAME = re.compile(r"^ProfilerStep#(\d+)$")


def _step_numbers(starts: np.ndarray, spans: list[tuple[int, int, int]]) -> np.ndarray:
    """Step number of each start time, -1 outside every ProfilerStep span."""
    if not spans or len(starts) == 0:
        return np.full(len(starts), -1, np.int64)
    span_start = np.array([s[1] for s in spans], np.int64)
    span_end = np.array([s[2] for s in spans], np.int64)
    span_step = np.array([s[0] for s in spans], np.int64)
    k = np.searchsorted(span_start, starts, side="right") - 1
    inside = (k >= 0) & (starts < span_end[np.clip(k, 0, None)])
    return np.where(inside, span_step[np.clip(k, 0, None)], -1)


def step_column(starts: np.ndarray, spans: list[tuple[int, int, int]]) -> pa.Int64Array:
    """Step number of each start time, from ProfilerStep spans, as a nullable Arrow column
    (null outside every span)."""
    steps = _step_numbers(np.asarray(starts, np.int64), spans)
    return pa.array(steps, pa.int64(), mask=steps < 0)


def steps_from_spans(spans: list[tuple[int, int, int]], rank: int) -> dict[str, Any]:
    """Steps of an imported trace: one row per ProfilerStep annotation."""
    spans = sorted(set(spans), key=lambda s: (s[1], s[0]))
    n = len(spans)
    return {
        "rank": [rank] * n,
        "step": [s[0] for s in spans],
        "start_ns": [s[1] for s in spans],
        "end_ns": [s[2] for s in spans],
        "dur_ns": [s[2] - s[1] for s in spans],
        "profiled": [True] * n,
        "window": [None] * n,
        "device_peak_bytes": [None] * n,
        "rss_bytes": [None] * n,
        "cpu_ns": [None] * n,
        "gc_ns": [None] * n,
        "gc_generation": [None] * n,
        "optimizer_faults": [None] * n,
        "step_faults": [None] * n,
        "optimizer_cpu_ns": [None] * n,
        "optimizer_ns": [None] * n,
        "backward_ns": [None] * n,
        "runq_ns": [None] * n,
        "save_ns": [None] * n,
        "save_site": [None] * n,
        "save_call": [None] * n,
        "source": ["trace"] * n,
        "data_wait_ns": [None] * n,
        "batch_size": [None] * n,
        "loader_batches": [None] * n,
        "loss_scale": [None] * n,
        "skipped": [None] * n,
        "compile_ns": [None] * n,
        # every step of an import is recorded alike: none is singled out as disturbed
        "disturbed_by": [None] * n,
        "loop": [0] * n,
        "loop_disturbed_by": [None] * n,
    }


def steps_from_record(rec: dict[str, Any], rank: int,
                      meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Steps recorded by the step collector during a ``dsprof run`` (see collectors/steps.py).
    ``meta`` (meta.json: settings, env) says which steps dsprof disturbed."""
    bounds: list[int] = list(rec.get("boundaries_ns", []))
    start0: int = rec["start_ns"]
    if not bounds and rec.get("end_ns"):
        # No boundary was ever marked: the whole run is step 0.
        bounds = [rec["end_ns"]]
    starts = [start0] + bounds[:-1]
    n = len(bounds)
    window_of: dict[int, int] = {}
    for w in rec.get("windows", []):
        if w.get("kind", "window") not in ("window", "unstepped"):
            continue  # set aside (collectors/window_files.py): its ops are not in the tables
        for s in w.get("steps", []):
            window_of[s] = w["index"]
    rss = rec.get("rss_bytes") or []
    peak = rec.get("device_peak_bytes") or []
    cpu = rec.get("cpu_ns") or []
    durs = [e - s for s, e in zip(starts, bounds)]
    step_faults = _padded(rec.get("step_faults") or [], n)
    edges = loop_edges(rec.get("loop_starts") or (), n)

    def reasons(loop: int | None) -> list[str | None]:
        return disturbed_reasons(n, rec.get("windows", []), (meta or {}).get("settings") or {},
                                 (meta or {}).get("env") or {}, rec.get("decided_step"),
                                 rec.get("handover_step"), rec.get("autograd_anomaly"),
                                 ((meta or {}).get("user_profiler") or {}).get("steps") or (),
                                 step_faults if rec.get("step_faults") else None,
                                 durs, rec.get("loop_starts") or (), _sources(rec, n), loop)

    return {
        "rank": [rank] * n,
        "step": list(range(n)),
        "start_ns": starts,
        "end_ns": bounds,
        "dur_ns": durs,
        "profiled": [i in window_of for i in range(n)],
        "window": [window_of.get(i) for i in range(n)],
        "device_peak_bytes": _padded(peak, n),
        "rss_bytes": _padded(rss, n),
        "cpu_ns": _padded(cpu, n),
        "gc_ns": _padded(rec.get("gc_ns") or [], n),
        "gc_generation": _padded(rec.get("gc_generation") or [], n),
        "optimizer_faults": _padded(rec.get("optimizer_faults") or [], n),
        "step_faults": step_faults,
        "optimizer_cpu_ns": _padded(rec.get("optimizer_cpu_ns") or [], n),
        "optimizer_ns": _padded(rec.get("optimizer_ns") or [], n),
        "backward_ns": _padded(rec.get("backward_ns") or [], n),
        "runq_ns": _padded(rec.get("runq_ns") or [], n),
        "save_ns": _padded(rec.get("save_ns") or [], n),
        "save_site": _padded(rec.get("save_site") or [], n),
        "save_call": _padded(rec.get("save_call") or [], n),
        "source": _sources(rec, n),
        "data_wait_ns": _padded(rec.get("data_wait_ns") or [], n),
        "batch_size": _padded(rec.get("batch_size") or [], n),
        "loader_batches": _padded(rec.get("loader_batches") or [], n),
        "loss_scale": _padded(rec.get("loss_scale") or [], n),
        "skipped": _padded(rec.get("skipped") or [], n),
        "compile_ns": compile_per_step(starts, bounds, rec.get("compile")),
        "disturbed_by": reasons(None),
        "loop": loop_index(edges),
        "loop_disturbed_by": in_loop_reasons(edges, reasons),
    }


def compile_per_step(starts: list[int], ends: list[int],
                     compile_rec: dict[str, Any] | None) -> list[int | None]:
    """Time each step spent in torch.compile (overlap with the compile intervals the compile
    watch recorded); null for every step of a run that never compiled."""
    if not compile_rec or not compile_rec.get("used"):
        return [None] * len(starts)
    intervals = compile_rec.get("intervals") or []
    return [sum(max(0, min(e, ce) - max(s, cs)) for cs, ce in intervals)
            for s, e in zip(starts, ends)]


def _sources(rec: dict[str, Any], n: int) -> list[str]:
    """What marked each boundary: per boundary when recorded (a run whose backward() marked
    the first steps until an optimizer took over has both), else the run's one source."""
    per_step = rec.get("sources") or []
    whole = rec.get("source", "optimizer")
    return [per_step[i] if i < len(per_step) else whole for i in range(n)]


def _padded(values: list[Any], n: int) -> list[Any]:
    """A per-boundary list cut or padded with nulls to n steps (a killed run's lists can be
    one short; the last, unfinished step of a run that never marked one has none)."""
    return list(values[:n]) + [None] * (n - len(values))


def dataloaders_from_record(rec: dict[str, Any], rank: int) -> dict[str, Any]:
    """The ``dataloaders`` table from session.json (see collectors/dataloader.py)."""
    rows = rec.get("dataloaders") or []
    out: dict[str, Any] = {"rank": [rank] * len(rows)}
    # the collector's rows are keyed by the table's names; one a run recorded before a column
    # existed lacks is null
    for c in DATALOADERS.column_names:
        if c != "rank":
            out[c] = [r.get(c) for r in rows]
    return out


def host_syncs_from_record(rec: dict[str, Any], rank: int) -> dict[str, Any]:
    """The ``host_syncs`` table from session.json (see collectors/host_sync.py): rows of
    [step, call, site, function, device, count, total_ns, max_ns, caller] (no caller in runs
    recorded before it)."""
    rows = rec.get("host_syncs") or []
    cols = ("step", "call", "site", "function", "device", "count", "total_ns", "max_ns",
            "caller")
    out: dict[str, Any] = {"rank": [rank] * len(rows)}
    for i, c in enumerate(cols):
        out[c] = [r[i] if len(r) > i else None for r in rows]
    return out
