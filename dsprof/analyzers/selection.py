"""``dsprof analyze --only TERM``: which findings a term selects.

A term is an analyzer's name (``fusion_optimizer``) or the start of a finding id (``fusion``,
``fusion-4a7b``): ids are what every other command prints, and their prefix is the finding's
kind (``fusion.optimizer`` gives ``fusion-...``), which is not always its analyzer's name. So a
selection is a filter over a full analysis, never a smaller analysis written in its place: a
partial list must not overwrite ``findings.json``.
"""

from __future__ import annotations

from dataclasses import replace

from dsprof.analyzers.registry import Analysis
from dsprof.errors import ConfigError
from dsprof.findings import Finding


def matches(f: Finding, terms: tuple[str, ...]) -> bool:
    return any(f.analyzer == t or f.id.startswith(t) for t in terms)


def select(analysis: Analysis, terms: tuple[str, ...], analyzer_names: set[str]) -> Analysis:
    """The findings of ``analysis`` that ``terms`` select, with the skipped and failed
    analyzers they name. Raises ConfigError for a term that names no analyzer and starts no
    finding id."""
    chosen = [f for f in analysis.findings if matches(f, terms)]
    unknown = sorted(t for t in terms if t not in analyzer_names
                     and not any(f.id.startswith(t) for f in analysis.findings)
                     and not any(n.startswith(t.split("-")[0]) for n in analyzer_names))
    if unknown:
        raise ConfigError(f"no analyzer named {', '.join(unknown)} and no finding id starts "
                          f"with it; known: {', '.join(sorted(analyzer_names))}")
    named = {a for a in analyzer_names if a in terms} | {f.analyzer for f in chosen}
    return replace(analysis, findings=chosen,
                   skipped=[s for s in analysis.skipped if s["analyzer"] in named],
                   failed=[s for s in analysis.failed if s["analyzer"] in named])
