"""Findings: what an analyzer says should change, what it saves and how to prove it.

A :class:`Finding` is a plain, JSON-serializable record. Analyzers return them; the registry
(``dsprof.analyzers.registry``) ranks them by estimated saving and writes ``findings.json``;
the CLI, the dashboard and the exports only present them.

Identity: a finding's ``id`` is derived from ``kind`` and ``key`` (what it is about, e.g. a
module path and an op chain), never from a timestamp or a measured number, so the same problem
in two runs has the same id. That is what lets ``dsprof diff`` say a finding was resolved and
``dsprof run --apply ID`` name it in the next run.

Severity is not chosen by the analyzer: it follows from the saving relative to the run's step
time (or peak memory), so findings from different analyzers rank on one scale.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from typing import Any

FINDINGS_FILE = "findings.json"
FINDINGS_VERSION = 1

CONFIDENCE = ("high", "medium", "low")
SEVERITY = ("high", "medium", "low", "info")

# ``data[SAVING_CLOCK]``: the clock a finding's ``saving_s`` is in, where it is not the step's.
# THREAD_CPU: priced at calibrated costs of the training thread's CPU time, from shapes, with
# no profiled op time (the CPU fused optimizer, the CPU GELU library-op swap): the machine's
# load during the profiled steps does not move it (the registry's loaded-machine rule does not
# apply), and it is compared with the thread's CPU time as it is. Absent: the saving is built
# from profiled op or kernel times, or from waits, a share of the step's wall time.
SAVING_CLOCK = "saving_clock"
THREAD_CPU = "thread_cpu"

# A saving of at least this share of a step (or of peak memory) is "high", then "medium",
# then "low"; a finding with no estimated saving is "info".
_SEVERITY_SHARES = ((0.10, "high"), (0.03, "medium"), (0.0, "low"))


@dataclass(frozen=True)
class Evidence:
    """One fact a finding rests on, pointing into the tables where possible.

    Args:
        text: one line a person reads ("aten::add_ x 312 in layers.3.mlp, backward").
        rank, step: where it happened.
        start_ns, end_ns: a time range (run clock) the dashboard's timeline can jump to.
        op_ids: ``ops.id`` values (of ``rank``) it is about.
        module: the module path it is about.
        site: a source location ("train.py:42") where the user can act.
        value: the measured quantity behind the text, if one number says it.
    """

    text: str
    rank: int | None = None
    step: int | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    op_ids: tuple[int, ...] = ()
    module: str | None = None
    site: str | None = None
    value: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "text" and value not in (None, ()):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Evidence:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in doc.items() if k in known}
        if "op_ids" in kw:
            kw["op_ids"] = tuple(kw["op_ids"])
        return cls(**kw)


@dataclass(frozen=True)
class Finding:
    """Args:
        analyzer: the registry name of the analyzer that made it.
        kind: what sort of problem, dotted ("fusion.pointwise_chain", "memory.leak").
        key: what it is about, stable across runs of the same program (module path, op chain,
            source line); with ``kind`` it makes the id.
        title: one line, imperative where there is a fix ("Fuse 6 pointwise ops in ...").
        saving_s: estimated time saved per step, seconds (0 when it saves no time).
        saving_bytes: estimated peak memory saved, bytes (0 when it saves no memory).
        confidence: how sure the estimate is: high, medium or low.
        explanation: the numbers behind the estimate, in a few sentences.
        evidence: the facts it rests on.
        fix: code or configuration to paste.
        apply: environment knobs that apply the fix without a code change
            (``dsprof run --apply ID`` sets them), empty when it cannot be applied that way.
        verify: the command that measures the effect.
        data: analyzer-specific JSON for the dashboard (a Pareto front, a series).
        severity, step_share: filled in by the registry from the run's step time / peak.
    """

    analyzer: str
    kind: str
    key: str
    title: str
    saving_s: float = 0.0
    saving_bytes: int = 0
    confidence: str = "medium"
    explanation: str = ""
    evidence: tuple[Evidence, ...] = ()
    fix: str = ""
    apply: dict[str, str] = field(default_factory=dict)
    verify: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"
    share: float = 0.0
    """The saving as a share of the median step time (or of peak memory for a memory-only
    finding), 0..1; set by the registry."""

    def __post_init__(self) -> None:
        if self.confidence not in CONFIDENCE:
            raise ValueError(f"confidence must be one of {CONFIDENCE}, not {self.confidence!r}")
        if self.severity not in SEVERITY:
            raise ValueError(f"severity must be one of {SEVERITY}, not {self.severity!r}")
        if self.saving_s < 0 or self.saving_bytes < 0:
            raise ValueError("a saving is never negative; say what it costs in explanation")

    @property
    def id(self) -> str:
        digest = hashlib.sha1(f"{self.kind}\0{self.key}".encode()).hexdigest()[:8]
        return f"{self.kind.split('.')[0]}-{digest}"

    def rated(self, step_s: float | None, peak_bytes: int | None) -> Finding:
        """This finding with ``severity`` and ``share`` set from the run's scale."""
        share = 0.0
        if self.saving_s > 0 and step_s:
            share = self.saving_s / step_s
        if self.saving_bytes > 0 and peak_bytes:
            share = max(share, self.saving_bytes / peak_bytes)
        severity = "info"
        if self.saving_s > 0 or self.saving_bytes > 0:
            severity = next(name for floor, name in _SEVERITY_SHARES if share >= floor)
        return replace(self, severity=severity, share=round(min(share, 1.0), 4))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "analyzer": self.analyzer,
            "kind": self.kind,
            "key": self.key,
            "title": self.title,
            "severity": self.severity,
            "share": self.share,
            "saving_s": round(float(self.saving_s), 9),
            "saving_bytes": int(self.saving_bytes),
            "confidence": self.confidence,
            "explanation": self.explanation,
            "evidence": [e.to_json() for e in self.evidence],
            "fix": self.fix,
            "apply": dict(sorted(self.apply.items())),
            "verify": self.verify,
            "data": self.data,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Finding:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in doc.items() if k in known}
        kw["evidence"] = tuple(Evidence.from_json(e) for e in doc.get("evidence", ()))
        return cls(**kw)


def rank_key(f: Finding) -> tuple[Any, ...]:
    """Findings sort by saving (share of step time, then seconds, then bytes), then by id, so
    the order never depends on which analyzer ran first."""
    return (-f.share, -f.saving_s, -f.saving_bytes, f.kind, f.id)
