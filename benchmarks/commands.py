"""What a user waits for: each ``dsprof`` command as typed, in a fresh process, in seconds.

For every trace folder it times ``python -c pass`` (the interpreter's own start), ``dsprof
--help``, ``dsprof import -o RUN TRACE``, then on that ingested run ``dsprof summary``, ``dsprof
gpu`` and ``dsprof analyze`` (interpreter start and imports included). With ``--base DIR`` (a
checkout of another dsprof version, e.g. ``git archive COMMIT | tar -x -C DIR``) the same
commands run from both trees, alternating, so load from other processes hits both alike; the
figure printed is the fastest of ``-n`` runs (the least disturbed).

    .venv/bin/python benchmarks/commands.py                       # the A100 and V100 traces
    .venv/bin/python benchmarks/commands.py --base /tmp/dsprof-old -n 5 ../shared/traces/hta_v100_1rank
"""

from __future__ import annotations

import argparse
import os
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


def _wall(argv: list[str], tree: Path | None) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree) if tree else "", "COLUMNS": "120"}
    t0 = time.perf_counter()
    # run outside both trees: ``python -m`` puts the working directory first on sys.path
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    return time.perf_counter() - t0


def measure(trace: Path, trees: list[Path], repeat: int) -> dict[str, list[float]]:
    """command label -> fastest seconds per tree."""
    py = [sys.executable]
    best: dict[str, list[float]] = {}

    def note(label: str, k: int, secs: float) -> None:
        row = best.setdefault(label, [float("inf")] * len(trees))
        row[k] = min(row[k], secs)

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
        print(f"\n{trace.name}  (fastest of {args.repeat}, seconds)")
        print(f"  {'command':32s} " + " ".join(f"{n:>10s}" for n in reversed(names)))
        for label, secs in best.items():
            print(f"  {label:32s} " + " ".join(f"{s:10.3f}" for s in reversed(secs)))


if __name__ == "__main__":
    main()
