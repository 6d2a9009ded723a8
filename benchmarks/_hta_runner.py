"""Run Holistic Trace Analysis on one trace folder and print its results and timings as JSON.

Executed by ``benchmarks/vs_hta.py`` with the Python of a separate virtual environment that has
``holistictraceanalysis==0.5.0`` and ``pandas<3`` (HTA is not a dsprof dependency). Not part of
the dsprof package: it imports ``hta`` and nothing of dsprof.

    .hta-venv/bin/python benchmarks/_hta_runner.py TRACE_DIR [--include-last-step]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import warnings


def _num(x):
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trace_dir")
    ap.add_argument("--include-last-step", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.CRITICAL)
    t0 = time.perf_counter()
    from hta.trace_analysis import TraceAnalysis

    t_import = time.perf_counter() - t0
    timings: dict[str, float] = {"import": t_import}
    t = time.perf_counter()
    ta = TraceAnalysis(trace_dir=args.trace_dir,
                       include_last_profiler_step=args.include_last_step)
    timings["load"] = time.perf_counter() - t
    ranks = ta.t.get_ranks()
    out: dict = {"ranks": ranks}

    t = time.perf_counter()
    kt, _ = ta.get_gpu_kernel_breakdown(visualize=False)
    timings["kernel_breakdown"] = time.perf_counter() - t
    out["kernel_types"] = {r["kernel_type"]: _num(r["percentage"]) for r in kt.to_dict("records")}

    t = time.perf_counter()
    tb = ta.get_temporal_breakdown(visualize=False)
    timings["temporal"] = time.perf_counter() - t
    out["temporal"] = {int(r["rank"]): [_num(r["idle_time_pctg"]), _num(r["compute_time_pctg"]),
                                        _num(r["non_compute_time_pctg"])]
                       for r in tb.to_dict("records")}

    t = time.perf_counter()
    idle = {}
    for rank in ranks:
        df, _ = ta.get_idle_time_breakdown(ranks=[rank], visualize=False)
        idle[rank] = [[int(r["stream"]), r["idle_category"], _num(r["idle_time"]),
                       _num(r["idle_time_ratio"])] for r in df.to_dict("records")]
    timings["idle"] = time.perf_counter() - t
    out["idle"] = idle

    t = time.perf_counter()
    ls = ta.get_cuda_kernel_launch_stats(ranks=ranks, visualize=False)
    timings["launch_stats"] = time.perf_counter() - t
    out["launch"] = {}
    for rank, df in ls.items():
        out["launch"][rank] = {
            "launches": len(df),
            "cpu_mean": _num(df["cpu_duration"].mean()),
            "cpu_median": _num(df["cpu_duration"].median()),
            "gpu_mean": _num(df["gpu_duration"].mean()),
            "delay_mean": _num(df["launch_delay"].mean()),
            "delay_median": _num(df["launch_delay"].median()),
            "gpu_shorter": int((df["gpu_duration"] < df["cpu_duration"]).sum()),
            "runtime_outliers": int((df["cpu_duration"] > 50).sum()),
            "delay_outliers": int((df["launch_delay"] > 100).sum()),
        }

    t = time.perf_counter()
    q = ta.get_queue_length_summary(ranks=ranks)
    timings["queue_length"] = time.perf_counter() - t
    out["queue"] = []
    if q is not None:
        q.columns = [c[1] if isinstance(c, tuple) else c for c in q.columns]
        for (rank, stream), r in q.iterrows():
            out["queue"].append([int(rank), int(stream), int(r["count"]), _num(r["mean"]),
                                 _num(r["std"]), _num(r["min"]), _num(r["25%"]),
                                 _num(r["50%"]), _num(r["75%"]), _num(r["max"])])
    timings["total"] = time.perf_counter() - t0 - t_import
    out["timings"] = timings
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
