"""What a user waits for: each ``dsprof`` command as typed, in a fresh process, in seconds.

For every trace folder it times ``python -c pass`` (the interpreter's own start), ``dsprof
--help``, ``dsprof import -o RUN TRACE``, then on that ingested run ``dsprof summary``, ``dsprof
gpu`` and ``dsprof analyze`` (interpreter start and imports included). With ``--base DIR`` (a
checkout of another dsprof version, e.g. ``git archive COMMIT | tar -x -C DIR``) the same
commands run from both trees, alternating, so load from other processes hits both alike; the
figures printed are the fastest wall time of ``-n`` runs (the least disturbed) and the least
CPU time (user + system, all threads: what the command costs, nearly independent of the load
that other processes put on a shared machine).

    .venv/bin/python benchmarks/commands.py                       # the A100 and V100 traces
    .venv/bin/python benchmarks/commands.py --base /tmp/dsprof-old -n 5 ../shared/traces/hta_v100_1rank
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "traces"
# a folder of one job each; kineto_resnet50_v100_mem holds two unrelated runs: one of them
DEFAULT_TRACES = ("hta_a100_2rank_nccl_r0", "hta_v100_1rank",
                  "kineto_resnet50_v100_mem/worker0.1623143089861.pt.trace.json.gz")


def _wall(argv: list[str], tree: Path | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the process and its threads)."""
    env = {**os.environ, "PYTHONPATH": str(tree) if tree else "", "COLUMNS": "120"}
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
    args = ap.parse_args()
    traces = args.traces or [SHARED / t for t in DEFAULT_TRACES]
    trees = [REPO] + ([args.base.resolve()] if args.base else [])
    names = ["this tree"] + (["base"] if args.base else [])
    for trace in traces:
        best = measure(trace, trees, args.repeat)
        print(f"\n{trace.name}  (fastest wall of {args.repeat} / least CPU, seconds)")
        print(f"  {'command':32s} " + " ".join(f"{n + ' wall':>15s} {'cpu':>6s}"
                                               for n in reversed(names)))
        for label, secs in best.items():
            print(f"  {label:32s} " + " ".join(f"{w:15.3f} {c:6.3f}" for w, c in reversed(secs)))


if __name__ == "__main__":
    main()
