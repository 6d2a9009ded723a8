"""dsprof against Holistic Trace Analysis on the same traces: results side by side, and time.

For each trace folder it runs, in a separate virtual environment, HTA 0.5.0 (``TraceAnalysis``
load, then kernel-type breakdown, temporal breakdown, idle-time breakdown per rank, CUDA launch
stats and queue-length summary; see ``benchmarks/_hta_runner.py``), and in this process dsprof
(``import_traces``: parse + Parquet tables + per-rank aggregates, then the same five analyses:
the kernel-type and temporal breakdowns from the aggregates, the others over DuckDB). It prints
both results and two time ratios, from the same runs:

* library: load + the five analyses, in-process, the Python imports of either library not
  counted (HTA's own timings from ``_hta_runner.py``; dsprof's measured here);
* end to end, as a user types it: ``dsprof import -o RUN TRACE``, ``dsprof summary RUN`` and
  ``dsprof gpu RUN``, each a fresh ``python -m dsprof`` process (interpreter start and imports
  included; ``summary`` runs the analyzers on the new run, as it does for a user), against the
  wall time of the fresh HTA process that imports HTA, loads the trace and runs the five
  analyses (``_hta_runner.py``). The dsprof processes run with their bytecode cached, as an
  installed package's is (pip compiles it at install; HTA's virtual environment has it too): in
  a private ``PYTHONPYCACHEPREFIX`` filled by one untimed run of the three commands per
  checkout, whatever ``PYTHONDONTWRITEBYTECODE`` says in the caller's environment (with it set,
  every process compiled dsprof's ~400 modules again: +0.1 s on each ``dsprof import``).

Convention: every number uses HTA's default, ``include_last_profiler_step=False`` (kernels
launched during the last ProfilerStep are dropped) and memcpy/memset counted as MEMORY kernels.
HTA rounds ns-resolution timestamps to whole microseconds (ceil start, floor end); dsprof keeps
nanoseconds, so traces with float timestamps (hta_a100_2rank_nccl_r0, hta_v100_1rank) differ
by that rounding (the unit tests show equality once it is applied).

HTA is not a dsprof dependency. The first run creates ``.hta-venv`` next to this repository's
``.venv`` (``python -m venv .hta-venv && .hta-venv/bin/pip install holistictraceanalysis==0.5.0
'pandas<3'``; pandas 3 breaks HTA 0.5.0), or pass ``--hta-python``.

    .venv/bin/python benchmarks/vs_hta.py                       # three shared traces
    .venv/bin/python benchmarks/vs_hta.py -n 3 ../shared/traces/hta_v100_1rank
    .venv/bin/python benchmarks/vs_hta.py --mode e2e              # end to end only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dsprof.ingest.importer import import_traces
from dsprof.metrics.gpu import idle as gpu_idle
from dsprof.metrics.gpu.breakdown import (
    kernel_type_breakdown,
    run_kernel_type_breakdown,
    run_temporal_breakdown,
    temporal_breakdown,
)
from dsprof.metrics.gpu.hta_view import hta_rounded
from dsprof.run import load

SHARED = REPO.parent / "shared" / "traces"
DEFAULT_TRACES = ("hta_sampled_2rank_nccl", "hta_a100_2rank_nccl_r0", "hta_v100_1rank")
HTA_VENV = REPO / ".hta-venv"


def ensure_hta(python: Path | None) -> Path:
    if python is not None:
        return python
    exe = HTA_VENV / "bin" / "python"
    if not exe.exists():
        print(f"creating {HTA_VENV} with holistictraceanalysis==0.5.0 (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(HTA_VENV)], check=True)
        subprocess.run([str(exe), "-m", "pip", "install", "-q", "holistictraceanalysis==0.5.0",
                        "pandas<3"], check=True)
    return exe


def run_hta(python: Path, folder: Path) -> dict:
    """HTA's results and timings; ``timings["wall"]`` is the whole fresh process, imports in."""
    c0 = _children_cpu()
    t0 = time.perf_counter()
    out = subprocess.run([str(python), str(REPO / "benchmarks" / "_hta_runner.py"), str(folder)],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    doc = json.loads(out.stdout)
    doc["timings"]["wall"] = wall
    doc["timings"]["cpu"] = _children_cpu() - c0
    return doc


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (and their threads and
    worker processes): what a command costs, nearly independent of other processes' load."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


E2E_COMMANDS = (("import", "-o", "{run}", "--no-progress", "{trace}"), ("summary", "{run}"),
                ("gpu", "{run}"))


def run_dsprof_cli(folder: Path, tree: Path = REPO,
                   pycache: Path | None = None) -> dict[str, float]:
    """Wall seconds of each ``dsprof`` command of E2E_COMMANDS in a fresh process, "total",
    and "cpu" (CPU seconds of all three; ``tree``: the dsprof checkout to run, this one by
    default; ``pycache``: where the processes read and write their bytecode, see
    :func:`bytecode_cache`)."""
    tmp = Path(tempfile.mkdtemp(prefix="dsprof-vs-hta-e2e-"))
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "120"}
    if pycache is not None:  # (as benchmarks/_bytecode.py does for the other benchmarks)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    timings: dict[str, float] = {}
    c0 = _children_cpu()
    try:
        for argv in E2E_COMMANDS:
            args = [a.format(run=tmp / "run", trace=folder) for a in argv]
            t0 = time.perf_counter()
            # cwd outside any tree: ``python -m`` puts the working directory first on sys.path
            subprocess.run([sys.executable, "-m", "dsprof", *args], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
            timings[argv[0]] = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    timings["total"] = sum(timings.values())
    timings["cpu"] = _children_cpu() - c0
    return timings


def bytecode_cache(folder: Path, tree: Path, root: Path) -> Path:
    """A bytecode cache for the dsprof processes of ``tree`` (under ``root``), filled by one
    untimed run of the commands on ``folder``: what a user's second command finds, dsprof and
    its dependencies compiled once (an installed package is compiled at install)."""
    pycache = Path(tempfile.mkdtemp(prefix="pycache-", dir=root))
    run_dsprof_cli(folder, tree, pycache)
    return pycache


def analyses(con, timings: dict[str, float] | None = None, run=None) -> dict:
    """The five HTA analyses over a connection with kernels/ops views (HTA's convention);
    given the ``run`` of that connection, the kernel-type and temporal breakdowns add up its
    per-rank ``kernel_time`` aggregate (written at ingest, whose time ``load`` counts), as
    ``dsprof summary`` does."""
    timings = {} if timings is None else timings
    t = time.perf_counter()
    kt = (kernel_type_breakdown(con, include_last_step=False) if run is None
          else run_kernel_type_breakdown(run, include_last_step=False))
    timings["kernel_breakdown"] = time.perf_counter() - t
    t = time.perf_counter()
    tb = (temporal_breakdown(con, include_last_step=False) if run is None
          else run_temporal_breakdown(run, include_last_step=False))
    timings["temporal"] = time.perf_counter() - t
    t = time.perf_counter()
    idle = gpu_idle.idle_breakdown(con, include_last_step=False)
    timings["idle"] = time.perf_counter() - t
    t = time.perf_counter()
    ls = gpu_idle.launch_stats(con, include_last_step=False)
    timings["launch_stats"] = time.perf_counter() - t
    t = time.perf_counter()
    q = gpu_idle.queue_length(con, include_last_step=False)
    timings["queue_length"] = time.perf_counter() - t
    return {
        "kernel_types": {s.kernel_type: s.percent for s in kt},
        "temporal": {t.rank: [t.idle_pct, t.compute_pct, t.non_compute_pct] for t in tb},
        "idle": _idle_pct(gpu_idle.idle_totals(idle)),
        "launch": {s.rank: s for s in ls},
        "queue": {(x.rank, x.stream): x for x in q},
    }


def run_dsprof(folder: Path) -> tuple[dict, dict, dict]:
    """(results at ns resolution, results in HTA's microsecond view, timings of the former)."""
    tmp = Path(tempfile.mkdtemp(prefix="dsprof-vs-hta-"))
    try:
        t0 = time.perf_counter()
        run_dir, _ = import_traces([folder], tmp / "run")
        timings = {"load": time.perf_counter() - t0}
        with load(run_dir.path) as run:
            res_ns = analyses(run.con, timings, run)
            timings["total"] = time.perf_counter() - t0
            res_hta = analyses(hta_rounded(run))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res_ns, res_hta, timings


def _idle_pct(totals: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    out = {}
    for rank, per in totals.items():
        total = sum(per.values()) or 1
        out[rank] = {c: 100.0 * per.get(c, 0) / total for c in gpu_idle.IDLE_CATEGORIES}
    return out


def _hta_idle_pct(hta: dict) -> dict[int, dict[str, float]]:
    totals: dict[int, dict[str, float]] = {}
    for rank, rows in hta["idle"].items():
        per = totals.setdefault(int(rank), {})
        for _stream, cat, us, _ratio in rows:
            per[cat] = per.get(cat, 0.0) + (us or 0.0)
    return _idle_pct(totals)


def compare(name: str, hta: dict, ours: dict, quiet: bool = False) -> float:
    """Print both results (unless ``quiet``); return the largest percentage-point gap seen."""
    worst = 0.0
    if quiet:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            return compare(name, hta, ours)
    print(f"\n== {name} (HTA convention: last ProfilerStep dropped, memcpy/memset = MEMORY; "
          "dsprof in HTA's microsecond view)")
    print(f"  {'kernel type share %':58s} {'HTA':>8s} {'dsprof':>8s}")
    for label in sorted(set(hta["kernel_types"]) | set(ours["kernel_types"]),
                        key=lambda k: -(hta["kernel_types"].get(k) or 0)):
        h, d = hta["kernel_types"].get(label) or 0.0, ours["kernel_types"].get(label, 0.0)
        if h < 0.05 and d < 0.05:
            continue
        worst = max(worst, abs(h - d))
        print(f"  {label:58s} {h:8.1f} {d:8.2f}")
    print("  temporal idle/compute/non-compute %, per rank")
    for rank, h in sorted(hta["temporal"].items(), key=lambda kv: int(kv[0])):
        d = ours["temporal"][int(rank)]
        worst = max(worst, *(abs(a - b) for a, b in zip(h, d)))
        print(f"    rank {rank}: HTA {h[0]:6.2f} {h[1]:6.2f} {h[2]:6.2f}   "
              f"dsprof {d[0]:6.2f} {d[1]:6.2f} {d[2]:6.2f}")
    print("  idle split host_wait/kernel_wait/other % of idle, per rank (all streams)")
    hidle = _hta_idle_pct(hta)
    for rank, h in sorted(hidle.items()):
        d = ours["idle"].get(rank, {})
        worst = max(worst, *(abs(h.get(c, 0) - d.get(c, 0)) for c in gpu_idle.IDLE_CATEGORIES))
        print(f"    rank {rank}: HTA " + " ".join(f"{h.get(c, 0):6.2f}" for c in
                                                   gpu_idle.IDLE_CATEGORIES)
              + "   dsprof " + " ".join(f"{d.get(c, 0):6.2f}" for c in gpu_idle.IDLE_CATEGORIES))
    print("  launch stats: launches, mean CPU us, mean delay us, GPU<CPU %, delay>100us %")
    for rank, h in sorted(hta["launch"].items(), key=lambda kv: int(kv[0])):
        d = ours["launch"][int(rank)]
        n = max(h["launches"], 1)
        hs, hd = 100 * h["gpu_shorter"] / n, 100 * h["delay_outliers"] / n
        ds, dd = (100 * d.gpu_shorter_than_cpu / max(d.launches, 1),
                  100 * d.delay_outliers / max(d.launches, 1))
        worst = max(worst, abs(hs - ds), abs(hd - dd))
        print(f"    rank {rank}: HTA {h['launches']:6d} {h['cpu_mean']:7.2f} "
              f"{h['delay_mean']:9.1f} {hs:6.2f} {hd:6.2f}   dsprof {d.launches:6d} "
              f"{d.cpu_mean_ns / 1e3:7.2f} {d.delay_mean_ns / 1e3:9.1f} {ds:6.2f} {dd:6.2f}")
    print("  queue length per stream: samples, mean, max")
    for rank, stream, count, mean, _std, _mn, _p25, _p50, _p75, mx in hta["queue"]:
        d = ours["queue"].get((rank, stream))
        got = f"{d.count:6d} {d.mean:7.3f} {d.max:5d}" if d else "   (none)"
        print(f"    rank {rank} stream {stream:4d}: HTA {count:6d} {mean:7.3f} {int(mx):5d}   "
              f"dsprof {got}")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="*", type=Path)
    ap.add_argument("-n", "--repeat", type=int, default=3, help="timed runs of each side")
    ap.add_argument("--mode", choices=("both", "library", "e2e"), default="both",
                    help="which ratio to measure (default: both, from the same HTA runs)")
    ap.add_argument("--hta-python", type=Path, default=None)
    ap.add_argument("--e2e-base", type=Path, default=None,
                    help="another dsprof checkout (e.g. `git archive COMMIT | tar -x -C DIR`) "
                         "whose end-to-end time is measured beside this one's, alternating")
    args = ap.parse_args()
    folders = args.traces or [SHARED / t for t in DEFAULT_TRACES]
    python = ensure_hta(args.hta_python)
    library, e2e = args.mode in ("both", "library"), args.mode in ("both", "e2e")
    rows, e2e_rows = [], []
    caches = Path(tempfile.mkdtemp(prefix="dsprof-vs-hta-pycache-"))
    try:
        pycache = bytecode_cache(folders[0], REPO, caches) if e2e else None
        base_pycache = (bytecode_cache(folders[0], args.e2e_base.resolve(), caches)
                        if e2e and args.e2e_base is not None else None)
        _measure(args, folders, python, library, e2e, rows, e2e_rows, pycache, base_pycache)
    finally:
        shutil.rmtree(caches, ignore_errors=True)
    _print_tables(args, rows, e2e_rows)


def _measure(args: argparse.Namespace, folders: list[Path], python: Path, library: bool,
             e2e: bool, rows: list, e2e_rows: list, pycache: Path | None,
             base_pycache: Path | None) -> None:
    """Time both sides on each folder, alternating; append to ``rows`` and ``e2e_rows``."""
    for folder in folders:
        # the two sides alternate, so a burst of load from elsewhere hits both alike
        hta_runs, ours_runs, cli_runs, base_runs = [], [], [], []
        for _ in range(args.repeat):
            hta_runs.append(run_hta(python, folder))
            if library:
                ours_runs.append(run_dsprof(folder))
            if e2e:
                cli_runs.append(run_dsprof_cli(folder, REPO, pycache))
                if args.e2e_base is not None:
                    base_runs.append(run_dsprof_cli(folder, args.e2e_base.resolve(),
                                                    base_pycache))
        if library:
            res_ns, res_hta, _ = ours_runs[0]
            worst = compare(folder.name, hta_runs[0], res_hta)
            worst_ns = compare(folder.name, hta_runs[0], res_ns, quiet=True)
            h = statistics.median(r["timings"]["total"] for r in hta_runs)
            d = statistics.median(t["total"] for _, _, t in ours_runs)
            rows.append((folder.name, h, d, worst, worst_ns))
        if e2e:
            h = statistics.median(r["timings"]["wall"] for r in hta_runs)
            h_cpu = min(r["timings"]["cpu"] for r in hta_runs)
            per = {k: statistics.median(t[k] for t in cli_runs) for k in cli_runs[0]}
            per["cpu"] = min(t["cpu"] for t in cli_runs)
            base = statistics.median(t["total"] for t in base_runs) if base_runs else None
            base_cpu = min(t["cpu"] for t in base_runs) if base_runs else None
            e2e_rows.append((folder.name, h, per, base, h_cpu, base_cpu))


def _print_tables(args: argparse.Namespace, rows: list, e2e_rows: list) -> None:
    if rows:
        print(f"\nlibrary\n{'trace':28s} {'HTA s':>8s} {'dsprof s':>9s} {'ratio':>7s} "
              f"{'max gap pp (us view)':>21s} {'(ns)':>6s}")
        for name, h, d, worst, worst_ns in rows:
            print(f"{name:28s} {h:8.3f} {d:9.3f} {h / d:6.1f}x {worst:21.2f} {worst_ns:6.2f}")
        print("(median of -n runs; time = load (parse + tables) + kernel breakdown + temporal + "
              "idle + launch stats + queue length, in-process, library imports excluded; gaps "
              "are the largest difference in percentage points over every share printed above, "
              "HTA's shares being rounded to 0.1/0.01; HTA = holistictraceanalysis 0.5.0)")
    if e2e_rows:
        with_base = args.e2e_base is not None
        print(f"\nend to end\n{'trace':28s} {'HTA s':>8s} {'import':>7s} {'summary':>8s} "
              f"{'gpu':>6s} {'dsprof s':>9s} {'ratio':>7s}"
              + (f" {'base s':>8s} {'ratio':>7s}" if with_base else ""))
        for name, h, per, base, _, _ in e2e_rows:
            print(f"{name:28s} {h:8.3f} {per['import']:7.3f} {per['summary']:8.3f} "
                  f"{per['gpu']:6.3f} {per['total']:9.3f} {h / per['total']:6.1f}x"
                  + (f" {base:8.3f} {h / base:6.1f}x" if base else ""))
        print("(median of -n runs; wall time of fresh processes, interpreter start and imports "
              "included: HTA = one process that imports HTA, loads the trace and runs the five "
              "analyses; dsprof = `dsprof import -o RUN TRACE`, `dsprof summary RUN`, "
              "`dsprof gpu RUN`, one process each)")
        print(f"\nend to end, CPU seconds\n{'trace':28s} {'HTA cpu':>8s} {'dsprof cpu':>11s} "
              f"{'ratio':>7s}" + (f" {'base cpu':>9s} {'ratio':>7s}" if with_base else ""))
        for name, _, per, _, h_cpu, base_cpu in e2e_rows:
            print(f"{name:28s} {h_cpu:8.3f} {per['cpu']:11.3f} {h_cpu / per['cpu']:6.1f}x"
                  + (f" {base_cpu:9.3f} {h_cpu / base_cpu:6.1f}x" if base_cpu else ""))
        print("(least of -n runs; user + system CPU of the same processes, worker processes "
              "included: what each side costs, nearly independent of other load on the "
              "machine, which moves the wall times)")


if __name__ == "__main__":
    main()
