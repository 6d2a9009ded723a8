"""The types of the ``dsprof summary`` report (computed in :mod:`dsprof.reports.summary`).

Plain frozen dataclasses with no numpy and no run layer, so that a command rendering a stored
summary (:mod:`dsprof.reports.stored`) imports neither pyarrow, DuckDB nor numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dsprof.facts import FULL_SPEED


@dataclass(frozen=True)
class CommsSummary:
    ranks: int
    steps: int
    """Distinct steps the collectives were issued in (0: none outside steps)."""
    collectives: list[dict[str, Any]] = field(default_factory=list)
    """Per collective: calls, calls_per_step (per rank), bytes, bytes_per_call, busbw_gbps."""
    overlap: list[dict[str, Any]] = field(default_factory=list)
    """Per rank: comm_ms, exposed_ms, overlapped_ms, overlap_pct (per step when steps)."""
    skew: list[dict[str, Any]] = field(default_factory=list)
    """Per rank, with two or more ranks: wait_ms_per_step, times_last, collectives."""



@dataclass(frozen=True)
class StepStats:
    count: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    outliers: list[tuple[int, float]]
    excluded: list[tuple[int, float]]
    """Steps left out of the statistics (setup, and steps dsprof disturbed), as (step, ms)."""
    rule: str = ""
    """Which steps counted (``dsprof.facts``: full-speed steps, steps after setup, all)."""
    ranks: int = 1
    """How many ranks the counted steps come from; ``count`` sums them."""
    per_rank: tuple[int, int] = (0, 0)
    """Fewest and most counted steps of one rank (equal unless a rank stopped early)."""
    outlier_ranks: list[int] = field(default_factory=list)
    """The rank of each of ``outliers``, in the same order."""
    other_loop: int = 0
    """How many of ``excluded`` are of the loop the run's window did not record (a forward
    loop before training, or the training after it: ``dsprof.facts.OTHER_LOOP``)."""


@dataclass(frozen=True)
class LoopStats:
    """One loop of a run that held several one after another (``dsprof.facts.LoopTime``)."""

    loop: int
    """Its index (``steps.loop``), 0 for the first."""
    first_step: int
    last_step: int
    source: str
    """What marked most of its steps: optimizer, backward, forward, manual."""
    recorded: bool
    """The loop the run's step times, profiler window and op-level findings are of."""
    count: int
    """Its steps that counted (per rank, summed over ranks), by ``rule``; 0: no step time."""
    rule: str
    median_ms: float | None
    mean_ms: float | None
    min_ms: float | None
    samples_per_s: float | None = None

    @property
    def counted(self) -> str:
        """Its counted steps as the summary and the dashboard show them: the number, with the
        rule where it is not the full-speed rule, or "none"."""
        if not self.count:
            return "none"
        return str(self.count) if self.rule == FULL_SPEED else f"{self.count} ({self.rule})"


@dataclass(frozen=True)
class PhaseTime:
    phase: str
    ms: float
    percent: float


@dataclass(frozen=True)
class OpTime:
    name: str
    count: int
    self_ms: float
    total_ms: float
    percent: float


@dataclass(frozen=True)
class MemoryPeak:
    rank: int
    device: str
    peak_bytes: int
    source: str
    """allocator_total (Total Allocated of [memory] events, counted from the capture start),
    timeline (a categorized memory timeline), device_peak (allocator peak per step), rss."""
    by_category: dict[str, int] = field(default_factory=dict)
    window: str | None = None
    """For a timeline that holds only some of the run's steps (a ``dsprof run`` records memory
    in its profiled steps): which ("steps 7-9 of 300"), the only steps the peak is over; None
    when it covers the whole capture."""


@dataclass(frozen=True)
class RunSummary:
    facts: dict[str, Any]
    steps: StepStats | None
    profiled_steps: int
    phases: list[PhaseTime]
    profiled_ms: float
    top_ops: list[OpTime]
    kernel_types: list[dict[str, Any]]
    kernel_types_hta: list[dict[str, Any]]
    temporal: list[dict[str, Any]]
    memory: list[MemoryPeak]
    notes: list[str]
    comms: CommsSummary | None = None
    loops: list[LoopStats] = field(default_factory=list)
    """Each loop's step time where the run held several loops one after another."""
    full_speed_phases: list[PhaseTime] = field(default_factory=list)
    """Backward, optimizer, data and the rest of the full-speed steps, each in mean ms a step
    (``reports/full_speed_phases.py``; CPU ``dsprof run`` runs), over ``full_speed_steps``."""
    full_speed_steps: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RunSummary:
        """The summary back from its ``to_json()`` (a stored report: dsprof/reports/stored.py).
        JSON has no tuples: pairs come back as lists, which the renderers index alike."""
        steps = doc.get("steps")
        comms = doc.get("comms")
        return cls(
            facts=dict(doc["facts"]),
            steps=None if steps is None else StepStats(**steps),
            profiled_steps=int(doc["profiled_steps"]),
            phases=[PhaseTime(**p) for p in doc["phases"]],
            profiled_ms=float(doc["profiled_ms"]),
            top_ops=[OpTime(**o) for o in doc["top_ops"]],
            kernel_types=list(doc["kernel_types"]),
            kernel_types_hta=list(doc["kernel_types_hta"]),
            temporal=list(doc["temporal"]),
            memory=[MemoryPeak(**m) for m in doc["memory"]],
            notes=list(doc["notes"]),
            comms=None if comms is None else CommsSummary(**comms),
            loops=[LoopStats(**loop) for loop in doc.get("loops") or []],
            full_speed_phases=[PhaseTime(**p) for p in doc.get("full_speed_phases") or []],
            full_speed_steps=int(doc.get("full_speed_steps") or 0))
