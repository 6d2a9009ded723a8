"""Imports flow one way through the pipeline (DESIGN.md "Packages"): collectors | ingest ->
run layer -> metrics -> analyzers / reports -> render / export / dashboard -> cli. A module may
import its own stage or an earlier one, never a later one; collectors and ingest meet only
through files (the run directory), never by import. Built from the source with ``ast`` (every
import, lazy ones inside functions too)."""

from __future__ import annotations

import ast

from tests.conftest import REPO

# module prefix -> (stage, group); the longest prefix wins
STAGES: dict[str, tuple[int, str]] = {
    # shared by every stage: the schema and its vocabulary, errors, log, formatting, the run
    # directory and its manifest, the device table, the Finding record
    **{f"dsprof.{m}": (0, "base") for m in (
        "_version", "errors", "log", "schema", "vocabulary", "units", "frames", "module_paths", "devices",
        "findings", "rundir", "manifest", "runlock", "sqlsafe",
        # findings.json's reader and the schema version: split out to import no pyarrow
        "findings_file", "schema_version",
        # JSON-writable text of the script's argv and paths (meta.json: rundir)
        "undecodable",
        # the types of meta.json's keys, checked as the manifest reads it
        "meta_types",
        # dsprof's threads out of the script's sight; the log's records on them
        "hidden_threads",
        # stack headroom for dsprof's work on the script's stack (collectors and entry)
        "headroom",
        # the launchers' names: the child-process collector and the summary's note
        "launchers",
        # a late device variable's words: the session's warning and the summary's note
        "late_variables",
        # pyarrow kept from importing pandas in dsprof's own processes (CLI, ingest workers)
        "without_pandas")},
    # terminal-text cleaning: depends on nothing in dsprof; the log formatter uses it too
    "dsprof.render.safe_text": (0, "base"),
    # what runs inside the profiled process
    "dsprof.collectors": (1, "collect"), "dsprof.settings": (1, "collect"),
    "dsprof.ranks": (1, "collect"), "dsprof.late_ranks": (1, "collect"),
    "dsprof.apply": (1, "collect"),
    # SIGTERM handling of a profiled process: the CLI's and each spawned rank's
    "dsprof.terminate": (1, "collect"), "dsprof.speed_env": (1, "collect"),
    # the script's faulthandler watchdog, paused over dsprof's end-of-run work
    "dsprof.script_watchdog": (1, "collect"),
    # the interpreter's options of a run: read by the session header and verify
    "dsprof.interpreter_options": (1, "collect"),
    # whether a rank's exception says a peer went away: read in the rank as its script ends
    "dsprof.peer_loss": (1, "collect"),
    "dsprof.ingest": (1, "ingest"),
    "dsprof.run": (2, "run layer"), "dsprof.facts": (2, "run layer"),
    "dsprof.metrics": (3, "metrics"),
    "dsprof.analyzers": (4, "analyze"), "dsprof.reports": (4, "analyze"),
    "dsprof.render": (5, "present"), "dsprof.export": (5, "present"),
    "dsprof.dashboard": (5, "present"),
    # commands and entry points: they may use everything
    "dsprof": (6, "entry"), "dsprof.cli": (6, "entry"), "dsprof.apply.plan": (6, "entry"),
    "dsprof.apply.verify": (6, "entry"), "dsprof.tuning": (6, "entry"),
}
# Known crossings, each with its reason. Keep this list short.
ALLOWED = {
    # --memory-budget: the live process measures a saved window's peak with ingest's parser
    ("dsprof.collectors.memory", "dsprof.ingest.memory_window"),
    ("dsprof.collectors.memory_summary", "dsprof.ingest.memory_window"),
}


def _stage(module: str) -> tuple[int, str]:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in STAGES:
            return STAGES[key]
    raise AssertionError(f"{module} is in no stage: add it to STAGES")


def _module_of(path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_edges() -> list[tuple[str, str, int]]:
    edges = []
    for path in sorted((REPO / "dsprof").rglob("*.py")):
        src = _module_of(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "dsprof":
                for alias in node.names:  # `from dsprof.x import y` may import module x.y
                    sub = f"{node.module}.{alias.name}"
                    target = sub if (REPO / (sub.replace(".", "/") + ".py")).exists() \
                        or (REPO / sub.replace(".", "/")).is_dir() else node.module
                    edges.append((src, target, node.lineno))
            elif isinstance(node, ast.Import):
                edges += [(src, a.name, node.lineno) for a in node.names
                          if a.name.split(".")[0] == "dsprof"]
    return edges


def test_no_import_runs_back_up_the_pipeline():
    edges = import_edges()
    assert len(edges) > 200  # the walk found the package
    bad = []
    for src, dst, line in edges:
        (s_rank, s_group), (d_rank, d_group) = _stage(src), _stage(dst)
        back = d_rank > s_rank or (d_rank == s_rank == 1 and s_group != d_group)
        if back and (src, dst) not in ALLOWED:
            bad.append(f"{src}:{line} imports {dst} ({s_group} -> {d_group})")
    assert bad == []


def test_what_reads_a_run_imports_no_collector():
    # an analyzer, a report, a renderer reads the run's tables and files, never the code that
    # recorded them (it runs on an imported trace, in a process that never profiled): what both
    # sides need (a folder's name, a line's words) lives in a base module
    bad = [f"{src}:{line} imports {dst}" for src, dst, line in import_edges()
           if 2 <= _stage(src)[0] <= 5 and _stage(dst)[1] == "collect"
           and dst.startswith("dsprof.collectors")]
    assert bad == []


def test_the_checker_sees_a_backward_import():
    assert _stage("dsprof.analyzers.fusion")[0] < _stage("dsprof.render.summary")[0]
    assert _stage("dsprof.ingest.events")[1] != _stage("dsprof.collectors.modules")[1]
    assert _stage("dsprof.apply.verify")[0] > _stage("dsprof.apply.checkpointing")[0]
