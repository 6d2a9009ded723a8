"""What dsprof costs the profiled process: plain vs `dsprof run`, side by side.

Runs an example plain and under `dsprof run` alternately (PAIRS pairs, interleaved so both see
the same machine load) and prints medians of:

* loop ratio: the training loop's time (steps 1..N-1; step 0 holds imports and setup),
  dsprof / plain;
* per-step ratios inside the profiled window, and outside it (dsprof's window start and stop,
  and the trace export, fall on the steps around the window);
* the same loop ratio in CPU time of the main thread (time.thread_time), which other tenants of
  a shared machine disturb much less than wall time;
* fixed seconds dsprof adds at start (process start to the end of step 0: imports, session
  start, the step-0 capture and its drop) and at exit (last step to process exit: saving,
  ingest, summary), plus the events captured. With --scaling it also runs
  dsprof with twice the steps, to show the exit work follows the events captured, not the
  run's length.

Usage: python benchmarks/overhead.py [--example examples/transformer_lm.py] [--steps 40]
       [--pairs 5] [--threads 1] [--scaling]
Timings on a shared 2-core machine vary by +-20 % between runs; read ratios near 1.05 as noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_plain(example: Path, args: list[str], tmp: Path) -> dict:
    out = tmp / f"plain-{time.time_ns()}.json"
    env = {**os.environ, "PLAIN_STEPS_OUT": str(out)}
    t0 = time.time_ns()
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "_plain_steps.py"), str(example),
                    *args], check=True, env=env, stdout=subprocess.DEVNULL)
    t1 = time.time_ns()
    rec = json.loads(out.read_text())
    b, c = rec["boundaries_ns"], rec["cpu_ns"]
    return {"steps": [(b[i] - b[i - 1]) / 1e9 for i in range(1, len(b))],
            "cpu": [(c[i] - c[i - 1]) / 1e9 for i in range(1, len(c))],
            "to_first": (b[0] - t0) / 1e9, "after_last": (t1 - b[-1]) / 1e9,
            "profiled": set(), "events": 0}


def run_dsprof(example: Path, args: list[str], tmp: Path) -> dict:
    sys.path.insert(0, str(REPO))
    import dsprof

    out = tmp / f"run-{time.time_ns()}"
    t0 = time.time_ns()
    subprocess.run([sys.executable, "-m", "dsprof", "run", "-q", "-o", str(out), str(example),
                    *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = time.time_ns()
    with dsprof.load(out) as run:
        rows = run.sql("SELECT step, dur_ns, profiled, cpu_ns FROM steps ORDER BY step")
        first, last = run.sql("SELECT min(end_ns), max(end_ns) FROM steps")[0]
        meta = run.meta
    steps = [d / 1e9 for s, d, p, c in rows if s > 0]
    cpu = [c / 1e9 for s, d, p, c in rows if s > 0]
    profiled = {s - 1 for s, d, p, c in rows if p and s > 0}   # index into `steps`
    return {"steps": steps, "cpu": cpu, "profiled": profiled,
            "to_first": (first - t0) / 1e9, "after_last": (t1 - last) / 1e9,
            "events": meta.get("events", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--example", default=str(REPO / "examples" / "transformer_lm.py"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scaling", action="store_true")
    a = ap.parse_args()
    example = Path(a.example)
    args = ["--steps", str(a.steps), "--threads", str(a.threads)]
    loop_r, in_r, out_r, start_s, exit_s, events = [], [], [], [], [], []
    cpu_loop_r, cpu_out_r = [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i in range(a.pairs):
            plain = run_plain(example, args, tmp)
            prof = run_dsprof(example, args, tmp)
            inside = [k for k in prof["profiled"] if k < len(plain["steps"])]
            outside = [k for k in range(min(len(plain["steps"]), len(prof["steps"])))
                       if k not in prof["profiled"]]
            loop_r.append(sum(prof["steps"]) / sum(plain["steps"]))
            in_r.append(sum(prof["steps"][k] for k in inside) / sum(plain["steps"][k] for k in inside))
            out_r.append(sum(prof["steps"][k] for k in outside)
                         / sum(plain["steps"][k] for k in outside))
            cpu_loop_r.append(sum(prof["cpu"]) / sum(plain["cpu"]))
            cpu_out_r.append(sum(prof["cpu"][k] for k in outside)
                             / sum(plain["cpu"][k] for k in outside))
            # start: process start to the end of step 0 (imports, setup, first iteration; under
            # dsprof also the session start and the step-0 capture); exit: last step to exit
            start_s.append(prof["to_first"] - plain["to_first"])
            exit_s.append(prof["after_last"] - plain["after_last"])
            events.append(prof["events"])
            print(f"pair {i + 1}: plain loop {sum(plain['steps']):.2f}s, dsprof loop "
                  f"{sum(prof['steps']):.2f}s (x{loop_r[-1]:.3f}), in-window x{in_r[-1]:.2f}, "
                  f"outside x{out_r[-1]:.3f}, loop CPU x{cpu_loop_r[-1]:.3f}, start +{start_s[-1]:.2f}s, exit +{exit_s[-1]:.2f}s",
                  flush=True)
        med = statistics.median
        print(f"\n{example.name}, {a.steps} steps, {a.pairs} pairs, {a.threads} thread(s), "
              "default schedule (wait 5, warmup 1, active 3)")
        print(f"loop time ratio dsprof/plain (median): {med(loop_r):.3f}")
        print(f"per-step ratio inside the window:      {med(in_r):.3f}")
        print(f"per-step ratio outside the window:     {med(out_r):.3f}")
        print(f"loop CPU-time ratio (main thread):     {med(cpu_loop_r):.3f}  "
              f"(outside the window {med(cpu_out_r):.3f}; less sensitive to other tenants)")
        print(f"fixed seconds added at start:          {med(start_s):.2f}")
        print(f"fixed seconds added at exit:           {med(exit_s):.2f} "
              f"({int(med(events)):,} events captured)")
        if a.scaling:
            long = run_dsprof(example, ["--steps", str(2 * a.steps), "--threads",
                                        str(a.threads)], tmp)
            long_plain = run_plain(example, ["--steps", str(2 * a.steps), "--threads",
                                             str(a.threads)], tmp)
            print(f"exit work with {2 * a.steps} steps: "
                  f"{long['after_last'] - long_plain['after_last']:.2f}s for "
                  f"{long['events']:,} events (vs {med(exit_s):.2f}s at {a.steps} steps)")


if __name__ == "__main__":
    main()
