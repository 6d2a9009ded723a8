"""Every trace in ../shared/traces as one job per set (each file alone, HTA's two sampled ranks
together), imported and analyzed once per test process, and its raw events: shared by the
tests that hold findings to the raw trace (test_claimed_time.py, test_trace_evidence.py)."""

from __future__ import annotations

import atexit
import gzip
import json
import shutil
import tempfile
from functools import cache
from pathlib import Path

from dsprof.analyzers.registry import Analysis, analyze
from dsprof.ingest.importer import import_traces
from dsprof.run import load
from tests.conftest import all_trace_files

# The memory timeline export is not a Chrome trace: it imports as memory rows only, has no events
# to re-derive a finding from, and makes none (test_trace_evidence.py holds it to that).
SETS: dict[str, list[Path]] = {}
for _path in all_trace_files():
    if _path.parent.name == "hta_memory_timeline":
        continue
    _key = _path.parent.name if _path.parent.name == "hta_sampled_2rank_nccl" \
        else f"{_path.parent.name}/{_path.name}"
    SETS.setdefault(_key, []).append(_path)
NAMES = sorted(SETS)


@cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="dsprof-shared-traces-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@cache
def analysis(name: str) -> tuple[Analysis, float | None]:
    """The set's findings (not written) and its mean step time (None without steps)."""
    run_dir, _ = import_traces(SETS[name], _workdir() / name.replace("/", "__"))
    with load(run_dir.path) as run:
        return analyze(run, write=False), run.facts.step.mean_s


@cache
def events(name: str) -> list[dict]:
    """The complete ('X') events of the first file of a set, times in microseconds."""
    with gzip.open(SETS[name][0], "rt") as fh:
        doc = json.load(fh)
    return [e for e in doc["traceEvents"] if e.get("ph") == "X" and "dur" in e]


def union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The spans merged where they overlap or touch, sorted."""
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def covered(a: float, b: float, spans: list[tuple[float, float]]) -> float:
    """How much of [a, b) the (disjoint) spans cover."""
    return sum(max(0.0, min(b, y) - max(a, x)) for x, y in spans)
