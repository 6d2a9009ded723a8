"""Accuracy of the memory advice: checkpointing peaks and the largest batch, predicted from one
run, against what runs measure.

For each model of ``benchmarks/_memory_models.py`` (Transformer, CNN, residual MLP) at two
sizes:

1. A baseline ``dsprof run`` at batch B0.
2. Checkpointing: the checkpointing analyzer, given a budget of ``CKPT_TARGET`` x the baseline
   peak, advises the cheapest plan under it (or, when none reaches it, the plan with the lowest
   peak); a run with ``DS_GRADIENT_CHECKPOINTING`` set to that plan measures its peak. The
   front's lowest-peak plan (the most modules checkpointed) is measured the same way.
3. Batch size: the batch-size analyzer, given a budget of ``BATCH_BUDGET`` x the baseline peak,
   predicts the largest batch; runs with ``DS_BATCH_SIZE`` then search the true largest batch
   whose measured peak stays within the budget (from the prediction, moving by the measured
   bytes per sample, then bisecting; a handful of runs).

Peaks are live bytes as dsprof measures them on every device (``memory_series``, the same
number ``--memory-budget`` enforces). Prints one row per model and size, with ratios, and exits
non-zero when a checkpointing peak misses by more than 5 %, a predicted batch by more than 5 %,
or a predicted batch does not fit.

    python benchmarks/memory_advice.py            # all six (a few minutes on 2 cores)
    python benchmarks/memory_advice.py --only cnn
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "_memory_models.py"
CKPT_TARGET = 0.85
BATCH_BUDGET = 3.0
BATCH0 = {"transformer": 8, "cnn": 16, "resmlp": 1024}
RUN_ARGS = ["--wait", "0", "--warmup", "1", "--active", "1"]
STEPS = "3"


def dsprof_run(out: Path, model: str, size: str, batch: int, env: dict[str, str]) -> Path:
    cmd = [sys.executable, "-m", "dsprof", "run", "-q", "-o", str(out), *RUN_ARGS, str(SCRIPT),
           "--model", model, "--size", size, "--batch-size", str(batch), "--steps", STEPS]
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return out


def peak_of(path: Path) -> int:
    from dsprof.run import load

    with load(path) as run:
        return int(run.sql("SELECT max(total) FROM memory_series")[0][0])


def context(path: Path, budget: int):
    """An analysis context of the run, with ``budget`` as its --memory-budget."""
    from dsprof.analyzers.registry import Context
    from dsprof.run import load

    run = load(path)
    ctx = Context(run)
    ctx.meta = {**run.meta, "settings": {**run.meta.get("settings", {}),
                                         "memory_budget": budget}}
    return ctx


def checkpoint_case(base: Path, tmp: Path, model: str, size: str, peak0: int,
                    deepest: bool) -> dict:
    """The advised plan under a budget of CKPT_TARGET x peak (``deepest``: the front's plan
    with the lowest peak instead), predicted against a run with it applied."""
    from dsprof.analyzers.checkpointing import checkpoint_plan, module_patterns

    ctx = context(base, int(peak0 * CKPT_TARGET))
    plan = checkpoint_plan(ctx)
    point = plan.front[-1] if deepest or plan.advised is None else plan.advised
    names = [n for (n,) in ctx.run.sql("SELECT DISTINCT name FROM modules")]
    ctx.run.close()
    patterns = module_patterns(point.modules, names)
    tag = "deep" if deepest else "ckpt"
    measured = peak_of(dsprof_run(tmp / f"{model}-{size}-{tag}", model, size, BATCH0[model],
                                  {"DS_GRADIENT_CHECKPOINTING": ",".join(patterns)}))
    return {"modules": len(point.modules), "patterns": patterns, "predicted": point.peak,
            "measured": measured, "front": len(plan.front)}


def batch_case(base: Path, tmp: Path, model: str, size: str, peak0: int) -> dict:
    from dsprof.analyzers.batch_size import BatchSize

    budget = int(peak0 * BATCH_BUDGET)
    ctx = context(base, budget)
    found = [f for f in BatchSize().run(ctx) if f.kind == "batch.size"]
    ctx.run.close()
    if not found:
        raise SystemExit(f"{model} {size}: no batch-size finding")
    predicted = int(found[0].data["advised"])
    per_sample = float(found[0].data["bytes_per_sample"])
    peaks: dict[int, int] = {}

    def fits(batch: int) -> bool:
        if batch not in peaks:
            peaks[batch] = peak_of(dsprof_run(tmp / f"{model}-{size}-b{batch}", model, size,
                                              batch, {"DS_BATCH_SIZE": str(batch)}))
        return peaks[batch] <= budget

    # Bracket the true largest batch from the prediction, stepping by the measured bytes per
    # sample, then bisect the bracket.
    lo, hi = (predicted, None) if fits(predicted) else (None, predicted)
    while lo is None or hi is None:
        known = lo if lo is not None else hi
        step = max(1, math.ceil(abs(budget - peaks[known]) / per_sample))
        probe = known + step if lo is not None else max(1, known - step)
        if fits(probe):
            lo = probe if lo is None or probe > lo else lo
        else:
            hi = probe if hi is None or probe < hi else hi
        if lo == 1 and hi == 1:
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return {"budget": budget, "predicted": predicted, "true": lo, "runs": len(peaks),
            "predicted_peak": int(found[0].data["predicted_peak"]),
            "measured_at_predicted": peaks[predicted]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=sorted(BATCH0), action="append")
    p.add_argument("--sizes", default="small,large")
    args = p.parse_args()
    models = args.only or ["transformer", "cnn", "resmlp"]
    rows, bad = [], []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dsprof-memadvice-") as tmpdir:
        tmp = Path(tmpdir)
        for model in models:
            for size in args.sizes.split(","):
                base = dsprof_run(tmp / f"{model}-{size}-base", model, size, BATCH0[model], {})
                peak0 = peak_of(base)
                ck = checkpoint_case(base, tmp, model, size, peak0, deepest=False)
                deep = checkpoint_case(base, tmp, model, size, peak0, deepest=True)
                bs = batch_case(base, tmp, model, size, peak0)
                rows.append((model, size, peak0, ck, deep, bs))
                print(f"  {model} {size}: done ({time.perf_counter() - t_start:.0f} s)",
                      file=sys.stderr, flush=True)
    print("checkpointing: peak predicted vs measured (MiB), advised plan under 0.85 x peak "
          "and the front's lowest-peak plan; batch: largest batch within 3 x peak")
    print(f"{'model':12} {'size':5} {'B0':>4} {'peak0':>7} | {'n':>2} {'pred':>7} {'meas':>7} "
          f"{'ratio':>6} | {'n':>2} {'pred':>7} {'meas':>7} {'ratio':>6} | {'budget':>7} "
          f"{'pred B':>6} {'true B':>6} {'ratio':>6} {'fits':>4} {'runs':>4}")
    for model, size, peak0, ck, deep, bs in rows:
        b_ratio = bs["predicted"] / bs["true"] if bs["true"] else float("nan")
        fit = bs["measured_at_predicted"] <= bs["budget"]
        cells = []
        for case in (ck, deep):
            ratio = case["measured"] / case["predicted"]
            cells.append(f"{case['modules']:>2} {case['predicted'] / 2**20:>7.2f} "
                         f"{case['measured'] / 2**20:>7.2f} {ratio:>6.3f}")
            if abs(ratio - 1) > 0.05:
                bad.append(f"{model} {size}: checkpointed peak off by {ratio - 1:+.1%} "
                           f"({','.join(case['patterns'])})")
        print(f"{model:12} {size:5} {BATCH0[model]:>4} {peak0 / 2**20:>7.2f} | {cells[0]} | "
              f"{cells[1]} | {bs['budget'] / 2**20:>7.2f} {bs['predicted']:>6} "
              f"{bs['true']:>6} {b_ratio:>6.3f} {'yes' if fit else 'NO':>4} {bs['runs']:>4}")
        if not fit or b_ratio < 0.95:
            bad.append(f"{model} {size}: batch {bs['predicted']} vs true {bs['true']}"
                       f"{'' if fit else ' (over the budget)'}")
    plans = "; ".join(f"{m} {s}: {','.join(c['patterns'])} / {','.join(d['patterns'])}"
                      for m, s, _, c, d, _ in rows)
    print(f"checkpoint plans: {plans}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    for line in bad:
        print(f"MISS {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
