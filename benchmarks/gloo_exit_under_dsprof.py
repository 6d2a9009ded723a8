"""How often ``dsprof run --nproc-per-node 2`` of a DDP/gloo script hangs at the script's exit,
for one or more dsprof source trees side by side (this one, and e.g. an older commit exported
with ``git archive``).

The script is tests/corpus/models/ddp_gloo.py with its own workaround (a barrier and a short
sleep before the teardown) taken out, as users' scripts are written:

    git archive f00d34b | tar -x -C /tmp/dsprof-before
    OMP_NUM_THREADS=1 python benchmarks/gloo_exit_under_dsprof.py --runs 6 \\
        --tree /tmp/dsprof-before --tree .

``--script race`` runs the script of benchmarks/gloo_teardown_race.py instead (its plain arm:
a bigger MLP, 12 steps), on which the race shows more often.

Prints, per tree, the runs that hung (still running after --timeout seconds; the launcher and
every rank are then killed) and the runs that ended otherwise than the plain script does
(exit status 0 and its ``done N steps`` line). The race needs a busy machine: run it beside
two busy loops (``yes > /dev/null &`` twice; stop them afterwards).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "corpus" / "models" / "ddp_gloo.py"
WORKAROUND = ("    dist.barrier()\n", "    time.sleep(0.1)\n")


def users_version(dest: Path) -> Path:
    """ddp_gloo.py without the barrier + sleep before ``destroy_process_group``."""
    text = SCRIPT.read_text()
    for line in WORKAROUND:
        if line not in text:
            raise SystemExit(f"{SCRIPT} no longer has {line.strip()!r}: update this benchmark")
        text = text.replace(line, "", 1)
    dest.write_text(text)
    return dest


def race_script(dest: Path) -> Path:
    """benchmarks/gloo_teardown_race.py's script; its argument picks the plain arm."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gloo_teardown_race import SCRIPT as RACE

    dest.write_text(RACE)
    return dest


def one_run(tree: Path, script: Path, args: list[str], done: str, out: Path,
            timeout: float) -> str:
    """``hung``, ``ok`` or ``wrong: ...`` (exit status or output unlike the plain script's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(tree.resolve()))
    proc = subprocess.Popen([sys.executable, "-m", "dsprof", "run", "--nproc-per-node", "2",
                             "--no-analyze", "-q", "-o", str(out), str(script), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        for p in family:  # ranks may outlive their launcher (an older tree)
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.communicate()
        return "hung"
    if proc.returncode != 0 or (done and stdout.count(done) != 2):
        return f"wrong: exit {proc.returncode}, {stdout.count(done)} {done!r} lines"
    return "ok"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=6, help="runs per tree (alternating)")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds before a run counts as hung")
    ap.add_argument("--script", choices=("ddp_gloo", "race"), default="ddp_gloo")
    ap.add_argument("--tree", type=Path, action="append",
                    help="a dsprof source tree (repeatable; default: this one)")
    args = ap.parse_args()
    trees = args.tree or [REPO]
    results: dict[Path, list[str]] = {t: [] for t in trees}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        if args.script == "race":
            script, script_args, done = race_script(Path(tmp) / "race.py"), ["plain"], ""
        else:
            script = users_version(Path(tmp) / "ddp_gloo_users.py")
            script_args, done = ["--steps", "6"], "done 6 steps"
        for i in range(args.runs):
            for n, tree in enumerate(trees):  # alternate, so that load hits every tree alike
                results[tree].append(one_run(tree, script, script_args, done,
                                             Path(tmp) / f"run{n}-{i}", args.timeout))
    for tree, res in results.items():
        wrong = [r for r in res if r.startswith("wrong")]
        print(f"{tree!s:40s} hung {res.count('hung')} of {len(res)}, "
              f"other endings {len(wrong)}{': ' + '; '.join(wrong) if wrong else ''}")
    print(f"({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
