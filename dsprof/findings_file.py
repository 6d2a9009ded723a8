"""``findings.json``: the :class:`Analysis` an ``analyze`` wrote, and reading it back.

Apart from the analyzers (``dsprof.analyzers.registry`` writes the file) so that a command
showing stored findings imports no run layer, pyarrow or DuckDB. The file is data: a field of
the wrong type is refused here, with the command that writes it again, not met as a TypeError
in a renderer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dsprof.errors import RunDirError
from dsprof.findings import FINDINGS_FILE, FINDINGS_VERSION, Finding


@dataclass
class Analysis:
    findings: list[Finding] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[dict[str, str]] = field(default_factory=list)
    """What the reader must know beside the ranked list: ``{kind, text}`` with kind
    ``withheld`` (why timing findings are not ranked), ``noise`` (the run's step-time noise),
    ``ranks`` (the run holds only some of the job's ranks) or ``gpu`` (advice for when the
    script moves to a GPU, from a CPU run)."""
    noise: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": FINDINGS_VERSION,
                "findings": [f.to_json() for f in self.findings],
                "skipped": self.skipped, "failed": self.failed, "notes": self.notes,
                "noise": self.noise}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Analysis:
        return cls([Finding.from_json(f) for f in doc.get("findings", [])],
                   list(doc.get("skipped", [])), list(doc.get("failed", [])),
                   notes=list(doc.get("notes") or []), noise=doc.get("noise"))



_STR_FIELDS = ("analyzer", "kind", "key", "title", "explanation", "fix", "verify")
_NUM_FIELDS = ("saving_s", "saving_bytes", "share")


def _check_types(f: Finding) -> None:
    """A findings.json from elsewhere is data: fields of the wrong type are refused here,
    not met as a TypeError in a renderer."""
    for name in _STR_FIELDS:
        if not isinstance(getattr(f, name), str):
            raise TypeError(f"finding field {name!r} is not a string")
    for name in _NUM_FIELDS:
        value = getattr(f, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"finding field {name!r} is not a number")
    if not isinstance(f.apply, dict) or not isinstance(f.data, dict):
        raise TypeError("finding fields 'apply' and 'data' must be objects")
    for e in f.evidence:
        if not isinstance(getattr(e, "text", ""), str):
            raise TypeError("evidence text is not a string")


def read_findings_file(run_path: str | os.PathLike[str]) -> Analysis | None:
    """findings.json of a run, or None when it was never analyzed.

    Raises:
        RunDirError: the file is unreadable, truncated, or not findings dsprof wrote.
    """
    path = Path(run_path) / FINDINGS_FILE
    if not path.is_file():
        return None
    try:
        doc = orjson.loads(path.read_bytes())
        if not isinstance(doc, dict) or not isinstance(doc.get("findings", []), list):
            raise TypeError("expected an object with a findings list")
        analysis = Analysis.from_json(doc)
        for f in analysis.findings:
            _check_types(f)
        return analysis
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise RunDirError(f"{path} is truncated or not dsprof's findings ({exc}); "
                          f"`dsprof analyze {run_path}` writes it again") from None
