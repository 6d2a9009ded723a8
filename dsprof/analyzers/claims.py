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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dsprof.findings import Finding

# What can be claimed: GPU time with nothing to run; communication no compute hides; the
# stepping thread's wait for its batches (the input findings, then slow steps that waited).
GPU_IDLE = "gpu_idle"
EXPOSED_COMM = "exposed_comm"
DATA_WAIT = "data_wait"
RESOURCES = (GPU_IDLE, EXPOSED_COMM, DATA_WAIT)


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


# The registry's side (analyzers are duck-typed here: ``name``, ``claims``, ``reads``).

def check_order(analyzers: Sequence[Any]) -> None:
    """An analyzer that claims a resource without reading it runs before every analyzer that
    reads it, so a reader sees every claim it must subtract. Analyzers that both read and
    claim a resource form a chain in their listed order: each subtracts what the ones before
    it claimed.

    Raises:
        ValueError: a reader is listed before a claimer that does not read.
    """
    for i, reader in enumerate(analyzers):
        for later in analyzers[i + 1:]:
            late = set(reader.reads) & {r for r, _ in later.claims} - set(later.reads)
            if late:
                raise ValueError(f"analyzer {later.name} claims {', '.join(sorted(late))} "
                                 f"but runs after {reader.name}, which reads it")


def claimers_needed(analyzers: Sequence[Any], only: tuple[str, ...]) -> set[str]:
    """The analyzers ``only`` leaves out whose claims a chosen analyzer after them reads."""
    needed: set[str] = set()
    for i, reader in enumerate(analyzers):
        if reader.name not in only:
            continue
        needed |= {a.name for a in analyzers[:i]
                   if a.name not in only and set(reader.reads) & {r for r, _ in a.claims}}
    return needed


def record_claims(analyzer: Any, findings: list[Finding], ledger: ClaimLedger) -> None:
    """Enter in ``ledger`` the savings of ``analyzer``'s findings on what it claims."""
    for resource, kinds in analyzer.claims:
        for f in findings:
            if f.kind.startswith(kinds):
                ledger.record(resource, f)
