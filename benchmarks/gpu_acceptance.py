"""Run the GPU acceptance tests (tests/gpu) and print one table of what they found.

Called by benchmarks/gpu_acceptance.sh once the project's packages import. It runs pytest on
tests/gpu in a subprocess (with a time limit, so the table is printed even if a check hangs),
reads the one JSON line per test that tests/gpu/conftest.py writes, and prints:

    GPU path | what was checked | PASS / FAIL / SKIPPED | the measured figure (or the reason)

Report and run directories go to $OUT when it is set (the lent device machine returns only a
few files from there, so the run directories are packed into one archive), else to
./gpu-acceptance/. Exit status: 0 when nothing failed, 1 when a check failed or did not run.

Usage: python benchmarks/gpu_acceptance.py [--time-limit SECONDS] [PYTEST ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORT = "gpu-acceptance.jsonl"
TABLE = "gpu-acceptance.txt"
LOG = "gpu-acceptance.log"
ARCHIVE = "gpu-runs.tar.gz"
ARCHIVE_LIMIT = 15 << 20  # the device tool returns files up to 16 MiB


def run_tests(report: Path, runs: Path, limit: float, extra: list[str]) -> tuple[int, str]:
    """(pytest's exit status or 124 on the time limit, its output)."""
    env = {**os.environ, "DSPROF_GPU_REPORT": str(report), "DSPROF_GPU_RUNS": str(runs),
           "PYTHONUNBUFFERED": "1"}
    # in one process, without the project's addopts: the GPU tests share one device, and the
    # lent image's pytest has no xdist for addopts' `-n 2`
    cmd = [sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-q", "-rs",
           "-o", "addopts=", "-p", "no:dash", "-p", "no:cacheprovider", *extra]
    # its own process group, so that the time limit also stops the runs the tests started
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # (and a SIGTERM to this script, e.g. from an outer time limit, stops them too)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        output, _ = proc.communicate(timeout=limit)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return 124, output + f"\n(time limit of {limit:.0f} s reached: pytest stopped)\n"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def expected_tests() -> list[tuple[str, str, str]]:
    """(test name, GPU path, what it checks) of every test in tests/gpu, from the sources, so
    a test that never reported (time limit, crash) still has its row."""
    import ast

    out = []
    for path in sorted((REPO / "tests" / "gpu").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                doc = (ast.get_docstring(node) or node.name).splitlines()[0]
                gpu_path, _, checked = doc.partition(":")
                out.append((node.name, gpu_path.strip(), checked.strip()))
    return out


def table(rows: list[dict]) -> str:
    heads = ("GPU path", "what was checked", "result", "measured")
    w0 = max([len(heads[0])] + [len(r["path"]) for r in rows])
    w1 = max([len(heads[1])] + [len(r["checked"]) for r in rows])
    lines = [f"{heads[0]:<{w0}}  {heads[1]:<{w1}}  {heads[2]:<7}  {heads[3]}",
             f"{'-' * w0}  {'-' * w1}  {'-' * 7}  {'-' * 8}"]
    lines += [f"{r['path']:<{w0}}  {r['checked']:<{w1}}  {r['status']:<7}  {r['figure']}"
              for r in rows]
    return "\n".join(lines)


def pack(runs: Path, dest: Path) -> str:
    """Pack the run directories into one archive (everything, else without raw traces and
    snapshots when that is too big); returns what was packed."""
    for skip_raw in (False, True):
        with tarfile.open(dest, "w:gz") as tar:
            for path in sorted(runs.rglob("*")):
                if path.is_file() and not (skip_raw and path.suffix in (".json", ".pickle")
                                           and "raw" in path.parts):
                    tar.add(path, arcname=str(path.relative_to(runs.parent)))
        if dest.stat().st_size <= ARCHIVE_LIMIT:
            return "all files" if not skip_raw else "tables, logs and meta (raw traces left out)"
    return "too big even without raw traces"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time-limit", type=float, default=330.0,
                    help="seconds pytest may run before it is stopped (default 330)")
    args, extra = ap.parse_known_args()
    out_env = os.environ.get("OUT")
    out = Path(out_env) if out_env else REPO / "gpu-acceptance"
    out.mkdir(parents=True, exist_ok=True)
    report = out / REPORT
    report.unlink(missing_ok=True)
    runs = (Path(os.environ.get("TMPDIR", "/tmp")) / f"dsprof-gpu-runs-{os.getpid()}"
            if out_env else out / "runs")
    shutil.rmtree(runs, ignore_errors=True)  # the previous invocation's runs (`-o` must be new)
    t0 = time.monotonic()
    code, output = run_tests(report, runs, args.time_limit, extra)
    (out / LOG).write_text(output)
    seen = {}
    if report.exists():
        for line in report.read_text().splitlines():
            row = json.loads(line)
            seen[row["test"]] = row
    # every test has a row; one that never reported failed to run (time limit, crash),
    # unless pytest arguments (-k ...) chose a subset: then only what ran is listed
    rows = [seen.get(name) or {"test": name, "path": gpu_path, "checked": checked,
                               "status": "FAIL", "figure": "did not run (see " + LOG + ")"}
            for name, gpu_path, checked in expected_tests() if name in seen or not extra]
    rows += [row for name, row in seen.items() if name not in {r["test"] for r in rows}]
    text = table(rows)
    elapsed = time.monotonic() - t0
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    header = (f"dsprof GPU acceptance on {device} (torch {torch.__version__}), "
              f"{elapsed:.0f} s, pytest exit {code}")
    print(header)
    print(text)
    (out / TABLE).write_text(header + "\n" + text + "\n")
    if runs.exists() and any(runs.iterdir()):
        if out_env:
            what = pack(runs, out / ARCHIVE)
            shutil.rmtree(runs, ignore_errors=True)
            print(f"run directories: {out / ARCHIVE} ({what})")
        else:
            print(f"run directories: {runs}")
    print(f"report: {out / TABLE}; pytest output: {out / LOG}")
    if code not in (0, 5) and not any(r["status"] == "FAIL" for r in rows):
        print(output[-3000:])  # pytest itself failed (collection error, ...): show why
        return 1
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
