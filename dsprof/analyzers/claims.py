"""The claimed-time ledger: which finding already claims which time, so that every second
of a step is saved at most once.

Several analyzers price the same kind of time: GPU idle time (the DataLoader wait, the idle
after a host sync, a pageable readback, launch-bound gaps, a whole-GPU idle block) and exposed
communication (late collectives, compression, unbucketed all-reduces). Each analyzer declares
the resources it ``claims`` (with the finding kinds that claim them) and the ones it ``reads``;
the registry runs analyzers in their declared order (``registry.ANALYZERS``: every claimer of
a resource before its readers) and, after each one, enters its findings' savings here. A
reader subtracts what is already claimed (``claimed_s``) before it prices its own share, so
the findings on one resource never claim more than there is, by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsprof.findings import Finding

# What can be claimed: GPU time with nothing to run; communication no compute hides.
GPU_IDLE = "gpu_idle"
EXPOSED_COMM = "exposed_comm"
RESOURCES = (GPU_IDLE, EXPOSED_COMM)


@dataclass(frozen=True)
class Claim:
    """Seconds per step of ``resource`` that the finding ``claimed_by`` saves, where its
    evidence points (``rank``, ``step``, ``start_ns``/``end_ns``; None when it is an
    average over the run)."""

    resource: str
    seconds: float
    claimed_by: str
    rank: int | None = None
    step: int | None = None
    start_ns: int | None = None
    end_ns: int | None = None


@dataclass
class ClaimLedger:
    claims: list[Claim] = field(default_factory=list)

    def record(self, resource: str, finding: Finding) -> None:
        """Enter ``finding``'s time saving as claimed on ``resource``."""
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}")
        if finding.saving_s <= 0:
            return
        ev = finding.evidence[0] if finding.evidence else None
        rank = finding.data.get("rank") if isinstance(finding.data.get("rank"), int) else None
        self.claims.append(Claim(
            resource, float(finding.saving_s), f"{finding.kind}:{finding.id}",
            rank=rank if rank is not None else getattr(ev, "rank", None),
            step=getattr(ev, "step", None), start_ns=getattr(ev, "start_ns", None),
            end_ns=getattr(ev, "end_ns", None)))

    def claimed_s(self, resource: str, rank: int | None = None) -> float:
        """Seconds per step of ``resource`` claimed so far; with ``rank``, by findings about
        that rank or about no rank in particular."""
        return sum(c.seconds for c in self.claims if c.resource == resource
                   and (rank is None or c.rank is None or c.rank == rank))

    def by(self, resource: str) -> list[Claim]:
        return [c for c in self.claims if c.resource == resource]
