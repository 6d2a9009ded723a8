"""Digests of the tables ingest writes for every shared trace, to prove a rewrite of the ingest
hot path changed no value: each column's values (in row order) are hashed, so a digest changes
when any cell, the row order, a column's name or its Arrow type changes.

``tests/data/ingest_digests.json`` holds the digests recorded by the per-event ingest that
the vectorised one replaced (dsprof at f00d34b, its tree run with this script), for each shared
trace file and for two folders ingested as one run (two windows of one rank; two ranks). Re-record them only for a change that is meant
to alter a table (and say so in the commit):

    python -m tests.ingest_digests --write

The aggregates (``dsprof/ingest/aggregates.py``) are left out: they are computed from these
tables, and are another engineer's to change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import orjson
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
DIGESTS = REPO / "tests" / "data" / "ingest_digests.json"
_AGGREGATES = {"rank_totals", "kernel_time", "op_time", "phase_time"}


# folders ingested as one run: each file a profiler window of rank 0 ("windows"), or each
# file a rank ("ranks")
FOLDERS = {"kineto_resnet50_v100_mem": "windows", "hta_sampled_2rank_nccl": "ranks"}


def trace_files() -> list[Path]:
    """Every shared trace file, then the folders of :data:`FOLDERS` that exist."""
    if not TRACES.exists():
        return []
    files = sorted(p for p in TRACES.glob("*/*") if p.name != "README.md")
    return files + [TRACES / f for f in FOLDERS if (TRACES / f).is_dir()]


def key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.is_file() else f"{path.name}/"


def run_digests(run_path: Path) -> dict[str, dict[str, str]]:
    """{table: {column: "<arrow type>:<sha256 of the values>"}} of a run's tables (all ranks,
    parts in rank order)."""
    out: dict[str, dict[str, str]] = {}
    for table_dir in sorted((run_path / "tables").iterdir()):
        if not table_dir.is_dir() or table_dir.name in _AGGREGATES:
            continue
        parts = sorted(table_dir.glob("rank*.parquet"), key=lambda p: int(p.stem[4:]))
        tables = [pq.read_table(p) for p in parts]
        cols: dict[str, str] = {}
        for name in tables[0].column_names:
            h = hashlib.sha256()
            for t in tables:
                h.update(orjson.dumps(t.column(name).to_pylist(),
                                      option=orjson.OPT_SERIALIZE_NUMPY))
            cols[name] = f"{tables[0].schema.field(name).type}:{h.hexdigest()[:16]}"
        out[table_dir.name] = cols
    return out


def trace_digests(path: Path, workdir: Path) -> dict[str, dict[str, str]]:
    """Import one trace file (or folder) into a fresh run under ``workdir`` and digest its
    tables."""
    from dsprof.ingest.importer import import_traces
    from dsprof.ingest.pipeline import ingest_run
    from dsprof.rundir import RunDir

    if path.is_file():
        run, _ = import_traces([path], workdir / key(path).replace("/", "__"))
        return run_digests(run.path)
    run = RunDir.create(workdir / path.name)
    for i, f in enumerate(sorted(path.glob("*.json.gz"))):
        raw = run.raw_dir(0 if FOLDERS[path.name] == "windows" else i)
        raw.mkdir(parents=True, exist_ok=True)
        (raw / f.name).symlink_to(f)
    ingest_run(run)
    return run_digests(run.path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"record them in {DIGESTS}")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        digests = {key(p): trace_digests(p, Path(tmp)) for p in trace_files()}
    text = json.dumps(digests, indent=1, sort_keys=True) + "\n"
    if args.write:
        DIGESTS.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
