"""Where the CPU time of each command goes: interpreter, imports, and the command's stages.

For each trace it runs, each in a fresh process as a user types them, ``dsprof import -o RUN
TRACE``, ``dsprof summary RUN`` and ``dsprof gpu RUN`` (the commands of ``vs_hta.py --mode
e2e``), and splits each one's CPU seconds (user + system of the process and its worker
processes) into:

* interpreter: ``python -c pass`` (its least CPU over the runs);
* imports: loading click, ``dsprof.cli`` and the command's module (what the command imports
  before it does anything);
* the command's stages, timed by wrapping the library calls the command makes: for ``import``,
  ``parse + tables`` (``import_traces``: parse, Parquet, per-rank aggregates) and ``analysis +
  reports`` (``precompute``: the analyzers, the summary and gpu reports, including the modules
  they import on first use: DuckDB, numpy, the analyzers); for ``summary`` and ``gpu``,
  ``compute`` (when no stored report is current: load the run and compute, imports included),
  ``analysis + reports`` (an older ``summary`` running the analyzers on a new run) and
  ``render`` (the terminal tables, and reading the stored report);
* rest: what is left (click's parsing, the run layer's opening of the run, printing, exit).

``--tree DIR`` splits another dsprof checkout's commands the same way (e.g. ``git archive
COMMIT | tar -x -C DIR``), for a before/after.

    .venv/bin/python benchmarks/command_split.py            # the three vs_hta traces
    .venv/bin/python benchmarks/command_split.py -n 5 ../shared/traces/hta_v100_1rank
    .venv/bin/python benchmarks/command_split.py --tree /tmp/dsprof-main
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _bytecode import cached_bytecode_env  # benchmarks/: the script's own folder

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "traces"
DEFAULT_TRACES = ("hta_sampled_2rank_nccl", "hta_a100_2rank_nccl_r0", "hta_v100_1rank")

# Runs one command in this fresh process and prints its stage CPU seconds as JSON on stderr's
# last line. Stages are measured with os.times() (process + finished children: import's
# worker processes count).
_CHILD = r"""
import os, sys, json
def cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
t0 = cpu()
import click
from dsprof.cli import main
argv = sys.argv[1:]
command = main.get_command(click.Context(main), argv[0])
stages = {"imports": cpu() - t0}

def timed(owner, attr, label):
    fn = getattr(owner, attr)
    def wrapper(*a, **k):
        s = cpu()
        try:
            return fn(*a, **k)
        finally:
            stages[label] = stages.get(label, 0.0) + cpu() - s
    setattr(owner, attr, wrapper)

# the calls each command makes, by the name its module imports them under; those a tree does
# not have are skipped, so an older dsprof (``--tree``) is split the same way
STAGES = {
    "import": [("import_traces", "parse + tables"), ("_precompute", "analysis + reports")],
    "summary": [("_computed", "compute"), ("summarize", "compute"), ("read_findings", "compute"),
                ("analyze", "analysis + reports"), ("_stored", "render"),
                ("render_full", "render"), ("render_findings", "render")],
    "gpu": [("_computed", "compute"), ("gpu_report", "compute"), ("_stored", "render"),
            ("render_gpu", "render")],
}
m = sys.modules[command.callback.__module__]
for attr, label in STAGES[argv[0]]:
    if hasattr(m, attr):
        timed(m, attr, label)
try:
    main(argv, standalone_mode=False)
except SystemExit:
    pass
stages["total"] = cpu() - t0
sys.stdout.flush()
print(json.dumps(stages), file=sys.stderr)
"""

COLUMNS = ("interpreter", "imports", "parse + tables", "analysis + reports", "compute", "render",
           "rest")


def _cpu_of(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), out.stderr


def split(trace: Path, repeat: int, tree: Path = REPO) -> dict[str, dict[str, float]]:
    """command -> stage -> least CPU seconds over ``repeat`` runs."""
    env = cached_bytecode_env({**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "120"}, tree)
    best: dict[str, dict[str, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="dsprof-split-"))
    try:
        for i in range(repeat):
            interp, _ = _cpu_of([sys.executable, "-c", "pass"], env)
            run = tmp / f"run{i}"
            for cmd in (["import", "-o", str(run), "--no-progress", str(trace)],
                        ["summary", str(run)], ["gpu", str(run)]):
                total, err = _cpu_of([sys.executable, "-c", _CHILD, *cmd], env)
                stages = json.loads(err.strip().splitlines()[-1])
                row = {"interpreter": interp, **{k: v for k, v in stages.items()
                                                 if k != "total"}}
                row["rest"] = max(total - interp - sum(v for k, v in stages.items()
                                                       if k != "total"), 0.0)
                row["total"] = total
                have = best.setdefault(cmd[0], {})
                if not have or total < have["total"]:
                    best[cmd[0]] = row
            shutil.rmtree(run, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="*", type=Path)
    ap.add_argument("-n", "--repeat", type=int, default=3, help="runs of each command")
    ap.add_argument("--tree", type=Path, default=REPO, help="the dsprof checkout to split")
    args = ap.parse_args()
    for trace in args.traces or [SHARED / t for t in DEFAULT_TRACES]:
        best = split(trace, args.repeat, args.tree.resolve())
        print(f"\n{trace.name}  (CPU seconds of the run with the least total, of {args.repeat}; "
              f"{args.tree.resolve()})")
        print(f"  {'command':9s} " + " ".join(f"{c:>18s}" for c in COLUMNS) + f" {'total':>7s}")
        for cmd, row in best.items():
            print(f"  {cmd:9s} " + " ".join(f"{row.get(c, 0.0):18.3f}" for c in COLUMNS)
                  + f" {row['total']:7.3f}")


if __name__ == "__main__":
    main()
