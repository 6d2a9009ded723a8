"""What the peak is made of, over the step that holds it: the facts the checkpointing and
batch-size analyzers both predict from.

* :class:`PeakTimeline`: the live bytes of the peak step (``memory_series``), split at every
  point into the part fixed per step (parameters, gradients, optimizer state, whatever the
  optimizer step allocates, and "other" bytes live all step long) and the part that grows with
  the batch (activations, the model's input, temporaries and the rise of "other": logits and
  loss gradients land there).
* :class:`ModuleWindow`: a module that checkpointing could wrap: what it would free (the
  ``modules`` table's ``activation_bytes``), what it costs (its forward time) and when its
  saved tensors would be gone, from the end of its forward to the start of its backward
  (``ops``). Outside that window a checkpointed module holds what it held before: its forward
  runs as usual, and its recompute rebuilds its activations just before its backward.
* :func:`reduction` / :func:`peak_with`: the timeline with a set of modules checkpointed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsprof.manifest import manifest_of
from dsprof.run import Run

FIXED = ("parameter", "gradient", "optimizer_state")
SCALED = ("activation", "input", "temporary", "other")


@dataclass
class PeakTimeline:
    """Live bytes over the step holding the peak (one rank, one capture).

    Args:
        rank, step, capture: where it comes from.
        ts: point times (ns, run clock), ascending.
        fixed: bytes per point that do not grow with the batch.
        scaled: bytes per point that grow with the batch.
        parts: bytes per category at the peak point.
    """

    rank: int
    step: int
    capture: int
    ts: np.ndarray
    fixed: np.ndarray
    scaled: np.ndarray
    parts: dict[str, int]

    @property
    def total(self) -> np.ndarray:
        return self.fixed + self.scaled

    @property
    def peak(self) -> int:
        return int(self.total.max())


def peak_timeline(run: Run) -> PeakTimeline | None:
    """The timeline of the step with the largest live total, or None without memory_series
    rows that belong to a step."""
    if not run.has("memory_series"):
        return None
    top = run.sql("SELECT rank, capture, step FROM memory_series WHERE step IS NOT NULL "
                  "ORDER BY total DESC, ts_ns LIMIT 1")
    if not top:
        return None
    rank, capture, step = top[0]
    cols = ", ".join(FIXED + SCALED)
    rows = run.sql(f"SELECT ts_ns, {cols} FROM memory_series WHERE rank = ? AND capture = ? "
                   "AND step = ? ORDER BY ts_ns", [rank, capture, step])
    data = np.array([[v or 0 for v in r] for r in rows], dtype=np.int64)
    fixed = data[:, 1:1 + len(FIXED)].sum(axis=1)
    scaled = data[:, 1 + len(FIXED):].sum(axis=1)
    # What the optimizer allocates (foreach/fused temporaries, the size of the parameters) does
    # not grow with the batch: inside its spans every byte counts as fixed. So does "other"
    # that stays all step long (a dataset, a cache): only its rise within the step scales.
    other = data[:, 1 + len(FIXED) + SCALED.index("other")]
    base_other = int(other.min()) if len(other) else 0
    fixed, scaled = fixed + base_other, scaled - base_other
    if run.has("ops"):
        spans = run.sql("SELECT start_ns, start_ns + dur_ns FROM ops WHERE rank = ? AND step = ? "
                        "AND parent_id IS NULL AND phase = 'optimizer'", [rank, step])
        for lo, hi in spans:
            inside = (data[:, 0] >= lo) & (data[:, 0] <= hi)
            fixed[inside] += scaled[inside]
            scaled[inside] = 0
    at = int(np.argmax(fixed + scaled))
    parts = {name: int(data[at, 1 + k]) for k, name in enumerate(FIXED + SCALED)}
    return PeakTimeline(int(rank), int(step), int(capture), data[:, 0], fixed, scaled, parts)


@dataclass(frozen=True)
class ModuleWindow:
    """Args:
        name: module path.
        freed: bytes checkpointing it frees (its activation_bytes).
        cost_s: seconds of one more forward per step (its forward time).
        fwd_end_ns, bwd_start_ns: when its saved tensors would be gone.
    """

    name: str
    freed: int
    cost_s: float
    fwd_end_ns: int
    bwd_start_ns: int


def module_windows(run: Run, rank: int, step: int) -> list[ModuleWindow]:
    """Modules called once per step, with parameters, whose forward saves something, with their
    windows in ``step``. Left out: a module called several times per step (a shared layer:
    each call is recomputed in its own backward, which this model does not follow), and one
    without parameters (a loss, an activation function): checkpoint keeps a module's inputs
    until its backward, which costs nothing when its first op saves them anyway (Linear,
    Conv, norms do) but holds the logits alive when a loss is wrapped (log_softmax does not
    save its input)."""
    if not (run.has("modules") and run.has("ops")):
        return []
    rows = run.sql(
        """
        WITH m AS (SELECT name, max(activation_bytes) AS freed, max(fwd_ns) AS fwd_ns,
                          max(calls) AS calls, max(params) AS params
                   FROM modules WHERE rank = ? GROUP BY name),
        fwd AS (SELECT name, max(start_ns + dur_ns) AS fwd_end FROM ops
                WHERE cat = 'module' AND rank = ? AND step = ? GROUP BY name),
        bwd AS (SELECT m.name, min(o.start_ns) AS bwd_start FROM m JOIN ops o
                  ON o.rank = ? AND o.step = ? AND o.phase = 'backward'
                 AND (o.module = m.name OR starts_with(o.module, m.name || '.'))
                GROUP BY m.name)
        SELECT m.name, m.freed, m.fwd_ns, fwd.fwd_end, bwd.bwd_start
        FROM m JOIN fwd USING (name) JOIN bwd USING (name)
        WHERE m.freed > 0 AND m.calls = 1 AND m.params > 0 AND bwd.bwd_start > fwd.fwd_end
        ORDER BY m.name
        """, [rank, rank, step, rank, step])
    return [ModuleWindow(str(n), int(a), float(f or 0) / 1e9, int(e), int(b))
            for n, a, f, e, b in rows]


class CheckpointTimeline:
    """The peak timeline with sets of modules checkpointed, priced fast: each module's window
    maps to a range of timeline points once, and a set's reduction is a difference array."""

    def __init__(self, timeline: PeakTimeline, windows: list[ModuleWindow]):
        self.timeline = timeline
        self.windows = windows
        self._lo = np.searchsorted(timeline.ts, [w.fwd_end_ns for w in windows], side="left")
        self._hi = np.searchsorted(timeline.ts, [w.bwd_start_ns for w in windows], side="left")

    def reduction(self, members: list[int]) -> np.ndarray:
        """Bytes fewer at every timeline point when the modules ``members`` (indices into
        ``windows``) are checkpointed."""
        diff = np.zeros(len(self.timeline.ts) + 1, np.int64)
        for i in members:
            diff[self._lo[i]] += self.windows[i].freed
            diff[self._hi[i]] -= self.windows[i].freed
        return np.cumsum(diff)[:-1]

    def peak_with(self, members: list[int], scale: float = 1.0) -> int:
        """Peak with ``members`` checkpointed, at ``scale`` times the profiled batch."""
        t = self.timeline
        return int((t.fixed + scale * (t.scaled - self.reduction(members))).max())

    def peaks(self, sets: list[list[int]]) -> list[int]:
        return [self.peak_with(s) for s in sets]


GPU_MARGIN = 0.08
"""Share of a GPU's memory kept free when advising: the CUDA context, the caching allocator's
rounding and fragmentation (reserved above allocated) live there."""


@dataclass(frozen=True)
class Budget:
    """Args:
        bytes: live bytes allowed at the peak.
        source: where it comes from, for the explanation.
    """

    bytes: int
    source: str


def memory_budget(meta: dict, rank: int = 0) -> Budget | None:
    """``--memory-budget`` when given, else the rank's GPU memory less ``GPU_MARGIN`` (its
    session's record, else an imported trace's ``deviceProperties.totalGlobalMem``); None on
    a CPU run without a budget (a host's free memory says nothing about what a job may use)."""
    manifest = manifest_of(meta)
    given = manifest.settings.get("memory_budget")
    if given:
        return Budget(int(given), "--memory-budget")
    dev = manifest.device(rank) or (manifest.devices[0] if manifest.devices else None)
    if dev is not None and dev.accelerator and dev.total_memory:
        return Budget(int(dev.total_memory * (1 - GPU_MARGIN)),
                      f"{dev.name or dev.kind} memory less {GPU_MARGIN:.0%}")
    if dev is None:
        props = trace_gpu(meta)
        if props is not None:
            return Budget(int(props["totalGlobalMem"] * (1 - GPU_MARGIN)),
                          f"{props.get('name') or 'GPU'} memory from the trace, less "
                          f"{GPU_MARGIN:.0%}")
    return None


def trace_gpu(meta: dict) -> dict | None:
    """An imported trace's first ``deviceProperties`` entry that gives the GPU's memory."""
    props = manifest_of(meta).raw.get("trace_device_properties") or []
    for p in props if isinstance(props, list) else []:
        if isinstance(p, dict) and isinstance(p.get("totalGlobalMem"), int) \
                and p["totalGlobalMem"] > 0:
            return p
    return None


def unprofiled_ratio(run: Run, rank: int, step: int) -> float:
    """Median step time outside profiler windows over the time of ``step`` (profiled), at most
    1: times measured inside a window carry the profiler's overhead, and a prediction of
    seconds per step is about the unprofiled run. 1 without a steps table."""
    if not run.has("steps"):
        return 1.0
    rows = run.sql("SELECT (SELECT median(dur_ns) FROM steps WHERE rank = ? AND step > 0 "
                   "AND NOT profiled), (SELECT max(dur_ns) FROM steps WHERE rank = ? "
                   "AND step = ?)", [rank, rank, step])
    plain, profiled = rows[0]
    if not plain or not profiled:
        return 1.0
    return min(1.0, float(plain) / float(profiled))
