"""The type of the ``dsprof gpu`` report (computed in :mod:`dsprof.reports.gpu`).

A plain dataclass with no run layer, so that a command rendering a stored report
(:mod:`dsprof.reports.stored`) imports neither pyarrow, DuckDB nor numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class GpuReport:
    device: str | None
    peak_note: str
    convention: str
    categories: list[dict[str, Any]] = field(default_factory=list)
    tensor_core: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    modules: list[dict[str, Any]] = field(default_factory=list)
    module_phase: list[dict[str, Any]] = field(default_factory=list)
    tc_misses: list[dict[str, Any]] = field(default_factory=list)
    idle: list[dict[str, Any]] = field(default_factory=list)
    launch: list[dict[str, Any]] = field(default_factory=list)
    queue: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    window: str = ""
    """What the summed figures cover: "the capture (N steps)", or of a trace without steps."""
    flops_known: bool = True
    """False when too little of the matrix kernels' time has known FLOPs (see module doc)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GpuReport:
        """The report back from its ``to_json()`` (a stored report: dsprof/reports/stored.py)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})
