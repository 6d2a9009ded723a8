"""Ingest speed: Kineto / torch.profiler trace -> dsprof Parquet tables, in events per second.

What it measures: for each input trace, the whole of ``dsprof.ingest.pipeline.ingest_run`` on a
fresh run directory (read the file, gunzip, decode the JSON, build the ops / kernels / memory /
steps tables, write Parquet), run once to warm up and then N times; it prints the median (and
the fastest) wall time and events/s, where "events" is the length of ``traceEvents``; events/s
per core (events / the CPU seconds the process used, all its threads together: ingest reads and
writes in a second thread, so per core is the fair figure on a shared machine); and the peak
memory ingest added, as a multiple of the decompressed trace size. The peak is the kernel's
resident high-water mark (VmHWM: every allocator at once, Python's, numpy's, Arrow's and
Parquet's), measured in a fresh process that first ingests the smallest shared trace (so lazy
imports are done), then resets the mark and ingests this trace once: peak RSS above the RSS
before it. It includes what the first real ingest of a process allocates whatever the trace's
size (code paths run for the first time, a Parquet writer per table, Arrow's compute
functions: 5-8 MB), which is why traces under ~5 MB show several times their size. Like
``dsprof import``, it has Arrow's C++ pool allocate from the C library (dsprof/ingest/heap.py).

The HTA column is a ratio to a *recorded* reference, not something measured in this run: HTA 0.5
loading hta_a100_2rank_nccl_r0 (17,952 events) in 1.23 s on 2 cores, i.e. ~14.6 k events/s, as
written in ../shared/notes/anchors-hta-tbplugin.md (section 3, "load" column).

Run it from the repository root:

    .venv/bin/python benchmarks/ingest.py                 # the largest shared trace, 5 repeats
    .venv/bin/python benchmarks/ingest.py -n 9 some.json.gz other.pt.trace.json.gz
    .venv/bin/python benchmarks/ingest.py --all           # every shared trace, as a table

(MB is the decompressed trace; "x MB" is peak MB / MB, the issue's memory bound being 2.)

Timings on a shared machine vary by +-20 % or more; use the median of several repeats (-n).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# as `dsprof import` runs it: Arrow's C++ pool (Parquet's writers) allocates from the C library
# (dsprof/ingest/heap.py); ARROW_DEFAULT_MEMORY_POOL=mimalloc in the environment measures without
from dsprof.ingest.heap import prefer_system_allocator  # (before pyarrow loads)

prefer_system_allocator()

from dsprof.ingest.pipeline import ingest_run
from dsprof.ingest.trace_file import KinetoTrace, MemoryTimelineRaw, load, read_bytes
from dsprof.rundir import RunDir

SHARED_TRACES = REPO.parent / "shared" / "traces"
HTA_EVENTS_PER_S = 17_952 / 1.23  # recorded in ../shared/notes/anchors-hta-tbplugin.md


def shared_traces() -> list[Path]:
    return sorted(p for p in SHARED_TRACES.rglob("*") if p.is_file() and (".json" in p.name
                  or p.name.endswith(".raw.gz")))


def count_events(path: Path) -> tuple[int, float]:
    """(number of events, uncompressed MB) of a trace."""
    mb = len(read_bytes(path)) / 1e6
    doc = load(path)
    if isinstance(doc, KinetoTrace):
        return doc.n_events, mb
    assert isinstance(doc, MemoryTimelineRaw)
    return len(doc.records), mb


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key))


def _reset_peak() -> int | None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the RSS now; returns that RSS in KiB, or
    None where /proc does not allow it (then no memory figure is printed)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kb("VmRSS")
    except OSError:
        return None


def _ingest_once(path: Path, tmp: Path, name: str) -> None:
    run = RunDir.create(tmp / name)
    raw = run.raw_dir(0)
    raw.mkdir(parents=True, exist_ok=True)
    try:
        os.link(path, raw / path.name)
    except OSError:
        shutil.copyfile(path, raw / path.name)
    ingest_run(run)


def peak_child(path: Path) -> None:
    """(In a fresh process) print the MB by which ingesting ``path`` raised the peak RSS."""
    with tempfile.TemporaryDirectory(prefix="dsprof-bench-") as tmp:
        warm = min(shared_traces() or [path], key=lambda p: p.stat().st_size)
        _ingest_once(warm, Path(tmp), "warm")
        base = _reset_peak()
        _ingest_once(path, Path(tmp), "run")
        print("nan" if base is None else (_status_kb("VmHWM") - base) / 1e3)


def peak_mb(path: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--peak-of", str(path)], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def time_ingest(path: Path, repeats: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) of each ingest_run after one untimed warm-up run."""
    times, cpu = [], []
    with tempfile.TemporaryDirectory(prefix="dsprof-bench-") as tmp:
        for i in range(repeats + 1):
            run = RunDir.create(Path(tmp) / f"run{i}")
            raw = run.raw_dir(0)
            raw.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, raw / path.name)
            except OSError:
                shutil.copyfile(path, raw / path.name)
            c0, t0 = time.process_time(), time.perf_counter()
            ingest_run(run)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            shutil.rmtree(run.path)
    return times[1:], cpu[1:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="*", type=Path,
                    help="trace files (default: the largest trace under ../shared/traces)")
    ap.add_argument("-n", "--repeats", type=int, default=5, help="runs per trace (default 5)")
    ap.add_argument("--all", action="store_true", help="every trace under ../shared/traces")
    ap.add_argument("--peak-of", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_of:
        peak_child(args.peak_of)
        return 0
    traces = list(args.traces)
    if args.all or not traces:
        found = shared_traces()
        if not found:
            sys.exit(f"no traces given and none found under {SHARED_TRACES}; "
                     "pass trace files as arguments")
        traces = found if args.all else [max(found, key=lambda p: count_events(p)[0])]
    missing = [str(p) for p in traces if not p.is_file()]
    if missing:
        sys.exit(f"no such trace file: {', '.join(missing)}")

    print(f"ingest_run, median of {args.repeats} runs, {os.cpu_count()} CPUs visible; "
          f"HTA reference = {HTA_EVENTS_PER_S / 1e3:.1f} k ev/s (recorded, not measured here)")
    head = (f"{'trace':<50} {'events':>8} {'MB':>6} {'median s':>9} {'min s':>7} {'k ev/s':>7} "
            f"{'x HTA':>6} {'k ev/s/core':>11} {'peak MB':>8} {'x MB':>5}")
    print(head)
    print("-" * len(head))
    for path in traces:
        n, mb = count_events(path)
        times, cpu = time_ingest(path, args.repeats)
        med = statistics.median(times)
        rate = n / med
        per_core = n / statistics.median(cpu)
        peak = peak_mb(path)
        label = f"{path.parent.name}/{path.name}"
        label = label if len(label) <= 50 else label[:24] + "..." + label[-23:]
        print(f"{label:<50} {n:>8,} {mb:>6.1f} {med:>9.3f} {min(times):>7.3f} "
              f"{rate / 1e3:>7.1f} {rate / HTA_EVENTS_PER_S:>6.1f} {per_core / 1e3:>11.1f} "
              f"{peak:>8.1f} {peak / mb:>5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
