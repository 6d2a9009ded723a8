"""How the memory of multi-rank communication analysis grows with the number of ranks.

What it does: imports one real NCCL trace (``hta_a100_2rank_nccl_r0`` from ../shared/traces:
rank 0 of a 2-GPU A100 job, 40 k events) with ``dsprof import``, then synthesizes runs of N
ranks by replaying that rank's Parquet tables N times, each copy with its ``rank`` set and all
its timestamps shifted by a per-rank offset (0-3 ms, so collectives are skewed across ranks as
in a real job). For each N, a fresh subprocess opens the run and runs the whole
communication analysis (per rank and step comm/exposed/overlap, cross-rank arrival skew, DDP
buckets) the way the analyzers do, through DuckDB views over every rank's Parquet; it reports
its peak RSS above the RSS it had before the analysis, and the time taken. For comparison, a
second subprocess per N does what a DataFrame-per-rank tool does first: load the ops, kernels
and comms tables of every rank into memory (Arrow tables; pandas would take more).

Run it from the repository root:

    .venv/bin/python benchmarks/comm_ranks_memory.py                 # 2, 8, 32, 64 ranks
    .venv/bin/python benchmarks/comm_ranks_memory.py --ranks 2 4 128

The figure to read is the last column pair: analysis memory vs. in-memory loading, per rank count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRACE = REPO.parent / "shared" / "traces" / "hta_a100_2rank_nccl_r0"
# time columns per table, shifted per synthesized rank
TIME_COLUMNS = {"ops": ("start_ns",), "kernels": ("start_ns",), "comms": ("start_ns", "call_ns"),
                "steps": ("start_ns", "end_ns")}

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from dsprof.run import load
from dsprof.metrics.comm.overlap import comm_overlap
from dsprof.metrics.comm.skew import collective_skew, rank_skew
from dsprof.metrics.comm.ddp_buckets import buckets
def status_kb(key):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(key))
run = load(sys.argv[2], ingest=False)
run.con.execute("SET threads = 2")
run.sql("SELECT 1")
with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the RSS now
    fh.write("5")
base = status_kb("VmRSS")
t0 = time.perf_counter()
if sys.argv[3] == "duckdb":
    n = len(comm_overlap(run.con, by_step=True)) + len(rank_skew(run.con, run.meta))
    n += len(collective_skew(run.con, run.meta)) + len(buckets(run.con))
else:
    tables = [run.table(t) for t in ("ops", "kernels", "comms")]
    n = sum(t.num_rows for t in tables)
secs = time.perf_counter() - t0
peak = status_kb("VmHWM")
print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "secs": secs, "n": n}))
"""


def synthesize(source: Path, dest: Path, ranks: int) -> tuple[int, int]:
    """A run directory of ``ranks`` replayed copies of ``source``'s rank 0. Returns (rows,
    Parquet bytes)."""
    import duckdb

    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("tables", "raw"))
    rng = random.Random(0)
    shifts = [0] + [rng.randrange(0, 3_000_000) for _ in range(ranks - 1)]
    con = duckdb.connect()
    rows = size = 0
    for table, cols in TIME_COLUMNS.items():
        src = source / "tables" / table / "rank0.parquet"
        if not src.exists():
            continue
        (dest / "tables" / table).mkdir(parents=True)
        for r in range(ranks):
            repl = ", ".join([f"{r}::INTEGER AS rank"] + [f"{c} + {shifts[r]} AS {c}" for c in cols])
            out = dest / "tables" / table / f"rank{r}.parquet"
            con.execute(f"COPY (SELECT * REPLACE ({repl}) FROM read_parquet('{src}')) "
                        f"TO '{out}' (FORMAT parquet, COMPRESSION lz4)")
            size += out.stat().st_size
        rows += ranks * con.execute(f"SELECT count(*) FROM read_parquet('{src}')").fetchone()[0]
    meta = json.loads((dest / "meta.json").read_text())
    meta.update(ranks=list(range(ranks)), world_size=ranks, ingested=True)
    (dest / "meta.json").write_text(json.dumps(meta))
    return rows, size


def measure(run: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), str(run), mode],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 8, 32, 64])
    args = p.parse_args()
    if not TRACE.exists():
        sys.exit(f"needs {TRACE} (../shared/traces)")
    from dsprof.ingest.importer import import_traces

    with tempfile.TemporaryDirectory(prefix="dsprof-bench-") as tmp:
        source, _ = import_traces([TRACE], Path(tmp) / "source")
        print(f"replaying {TRACE.name} (rank 0) as N ranks; peak RSS above the process's RSS "
              "before the analysis")
        print(f"{'ranks':>5} {'rows':>10} {'parquet MB':>10} | {'DuckDB analysis MB':>18} "
              f"{'s':>6} | {'load all in memory MB':>21} {'s':>6} | ratio")
        for n in args.ranks:
            run = Path(tmp) / f"ranks{n}"
            rows, size = synthesize(source.path, run, n)
            d = measure(run, "duckdb")
            m = measure(run, "materialize")
            dd, mm = d["peak_mb"] - d["base_mb"], m["peak_mb"] - m["base_mb"]
            print(f"{n:>5} {rows:>10,} {size / 2**20:>10.1f} | {dd:>18.1f} {d['secs']:>6.2f} | "
                  f"{mm:>21.1f} {m['secs']:>6.2f} | {mm / max(dd, 0.1):5.1f}x")
            shutil.rmtree(run)
        os.sync()


if __name__ == "__main__":
    main()
