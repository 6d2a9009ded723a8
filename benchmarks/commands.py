"""What a user waits for: each ``dsprof`` command as typed, in a fresh process, in seconds.

For every trace folder it times ``python -c pass`` (the interpreter's own start), ``dsprof
--help``, ``dsprof import -o RUN TRACE``, then on that ingested run ``dsprof summary``, ``dsprof
gpu`` and ``dsprof analyze`` (interpreter start and imports included). With ``--base DIR`` (a
checkout of another dsprof version, e.g. ``git archive COMMIT | tar -x -C DIR``) the same
commands run from both trees, alternating, so load from other processes hits both alike; the
figures printed are the fastest wall time of ``-n`` runs (the least disturbed) and the least
CPU time (user + system, all threads: what the command costs, nearly independent of the load
that other processes put on a shared machine).

With ``--ranks N`` (default 8; 0 leaves it out) a multi-rank case is timed too: the real
2-rank A100 NCCL trace's rank 0 (``hta_a100_2rank_nccl_r0``, 40 k events) replicated as ranks
0..N-1 of one job (each copy's ``distributedInfo`` says its rank and a world size of N), in one
folder, imported and read as a user would (``dsprof import`` parses the ranks in parallel
worker processes).

    .venv/bin/python benchmarks/commands.py                       # 3 traces + 8 ranks
    .venv/bin/python benchmarks/commands.py --base /tmp/dsprof-old -n 5 ../shared/traces/hta_v100_1rank
    .venv/bin/python benchmarks/commands.py --ranks 16 --no-traces  # the multi-rank case only
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bytecode import cached_bytecode_env  # benchmarks/: the script's own folder

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "traces"
# a folder of one job each; kineto_resnet50_v100_mem holds two unrelated runs: one of them
DEFAULT_TRACES = ("hta_a100_2rank_nccl_r0", "hta_v100_1rank",
                  "kineto_resnet50_v100_mem/worker0.1623143089861.pt.trace.json.gz")
REPLICATED = SHARED / "hta_a100_2rank_nccl_r0" / "nccl_data.json.gz"
_DIST_RANK = re.compile(rb'("distributedInfo"\s*:\s*\{[^}]*?"rank"\s*:\s*)\d+'
                        rb'(\s*,\s*"world_size"\s*:\s*)\d+')


def replicate(trace: Path, ranks: int, folder: Path) -> Path:
    """``folder`` holding ``trace`` as ranks 0..ranks-1 of one job: each copy's
    distributedInfo names its rank and a world size of ``ranks`` (the events are the same)."""
    data = gzip.decompress(trace.read_bytes())
    if not _DIST_RANK.search(data[:1 << 20]):
        raise SystemExit(f"{trace}: no distributedInfo rank/world_size to rewrite")
    folder.mkdir(parents=True, exist_ok=True)
    for r in range(ranks):
        copy = _DIST_RANK.sub(rb"\g<1>%d\g<2>%d" % (r, ranks), data, count=1)
        (folder / f"rank-{r}.json.gz").write_bytes(gzip.compress(copy, compresslevel=1))
    return folder


def _wall(argv: list[str], tree: Path | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the process and its threads)."""
    env = cached_bytecode_env({**os.environ, "PYTHONPATH": str(tree) if tree else "",
                               "COLUMNS": "120"}, tree)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # run outside both trees: ``python -m`` puts the working directory first on sys.path
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def measure(trace: Path, trees: list[Path], repeat: int) -> dict[str, list[tuple[float, float]]]:
    """command label -> (fastest wall seconds, least CPU seconds) per tree."""
    py = [sys.executable]
    best: dict[str, list[tuple[float, float]]] = {}

    def note(label: str, k: int, secs: tuple[float, float]) -> None:
        row = best.setdefault(label, [(float("inf"), float("inf"))] * len(trees))
        row[k] = (min(row[k][0], secs[0]), min(row[k][1], secs[1]))

    tmp = Path(tempfile.mkdtemp(prefix="dsprof-commands-"))
    try:
        for i in range(repeat):
            for k, tree in enumerate(trees):
                run = tmp / f"run{k}-{i}"
                note("python -c pass", k, _wall([*py, "-c", "pass"], None))
                note("dsprof --help", k, _wall([*py, "-m", "dsprof", "--help"], tree))
                note("dsprof import -o RUN TRACE", k,
                     _wall([*py, "-m", "dsprof", "import", "-o", str(run), "--no-progress",
                            str(trace)], tree))
                # the first summary of a run also runs the analyzers (findings.json)
                note("dsprof summary RUN (first)", k,
                     _wall([*py, "-m", "dsprof", "summary", str(run)], tree))
                for cmd in ("summary", "gpu", "analyze"):
                    note(f"dsprof {cmd} RUN", k, _wall([*py, "-m", "dsprof", cmd, str(run)], tree))
                shutil.rmtree(run, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="*", type=Path)
    ap.add_argument("-n", "--repeat", type=int, default=3, help="runs of each command")
    ap.add_argument("--base", type=Path, default=None,
                    help="another dsprof tree to time beside this one")
    ap.add_argument("--ranks", type=int, default=8,
                    help="also time a run of this many replicated ranks (0: not)")
    ap.add_argument("--no-traces", action="store_true",
                    help="leave the single traces out (with --ranks: the multi-rank case only)")
    args = ap.parse_args()
    traces = [] if args.no_traces else (args.traces or [SHARED / t for t in DEFAULT_TRACES])
    scratch = Path(tempfile.mkdtemp(prefix="dsprof-commands-ranks-"))
    if args.ranks > 0:
        traces.append(replicate(REPLICATED, args.ranks, scratch / f"{args.ranks}_ranks"))
    trees = [REPO] + ([args.base.resolve()] if args.base else [])
    names = ["this tree"] + (["base"] if args.base else [])
    try:
        for trace in traces:
            _report(trace, trees, names, args.repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _report(trace: Path, trees: list[Path], names: list[str], repeat: int) -> None:
    best = measure(trace, trees, repeat)
    title = (f"{trace.name}: {REPLICATED.parent.name} rank 0 as {trace.name.split('_')[0]} ranks"
             if trace.name.endswith("_ranks") else trace.name)
    print(f"\n{title}  (fastest wall of {repeat} / least CPU, seconds)")
    print(f"  {'command':32s} " + " ".join(f"{n + ' wall':>15s} {'cpu':>6s}"
                                           for n in reversed(names)))
    for label, secs in best.items():
        print(f"  {label:32s} " + " ".join(f"{w:15.3f} {c:6.3f}" for w, c in reversed(secs)))


if __name__ == "__main__":
    main()
