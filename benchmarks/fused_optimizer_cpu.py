"""What the per-parameter loop and the fused kernel of Adam/AdamW cost on this CPU, in training:
the calibration of analyzers/fusion_optimizer.py's ``loop_cpu_s`` and ``fused_cpu_s``.

    OMP_NUM_THREADS=1 python benchmarks/fused_optimizer_cpu.py [--steps 60] [--only NAME ...]

For each corpus script with an Adam/AdamW (tests/corpus/models, their ``make()``), two copies
of the same training, one with torch's default per-parameter loop and one with
``fused=True`` (set on the param groups before the first step, as ``DS_OPTIMIZER_FUSED=1``
does), run in alternating steps; each arm's median thread CPU time per step and per
``optimizer.step`` is printed, with the loop's ops (its ``aten::`` ops under the
``Optimizer.step`` span, counted once under torch.profiler), tensors and parameter bytes.
Then least squares, on the relative error, of

    loop  = a_opt x optimizers + a_op x ops + a_byte x parameter bytes
            + PAGE_FAULT_S x the loop's minor page faults (counted, not fit)
            + what its exp_avg_sq.sqrt() takes beyond a zero-free sqrt (timed, not fit)
    fused = b_opt x optimizers + b_tensor x tensors + b_byte x parameter bytes

and each script's fit error. No profiler runs in the timed steps. Nothing is asserted: the
figures are this machine's.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dsprof.metrics.ops.optimizer_cost import PAGE_FAULT_S

MODELS = Path(__file__).resolve().parents[1] / "tests" / "corpus" / "models"
# corpus scripts whose make() trains with Adam or AdamW, and their make() arguments
CASES = {"gan": (), "hand_attention": (), "multihead_attention": (), "vit": (), "unet": (),
         "compiled": (), "grad_accumulation": (), "conv1d_transformer": (),
         "hf_llama": ("llama",), "hf_bert": ("bert",), "hf_gpt2": ("gpt2",), "hf_t5": ("t5",),
         "wide_mlp": ()}


def _wide_mlp():
    """examples/periodic_eval.py's training without its evaluation: a few large tensors (a
    1 MiB weight, 1.04 MiB in 4 tensors), where the corpus scripts have many small ones."""
    from _loop import classifier_step

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return classifier_step(model, opt, torch.randn(64, 256), torch.randint(0, 10, (64,)))


BENCHMARK_ONLY = {"wide_mlp": _wide_mlp}  # cases written here, not corpus scripts


def _script(case: str) -> str:
    return "hf_models" if case.startswith("hf_") else case


def _loop_ops(step, optimizers: list) -> int:
    """``aten::`` ops directly under the optimizers' step spans in one step of the loop arm."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent
               is not None and e.cpu_parent.name.startswith("Optimizer.step#"))


def _sqrt_excess(optimizers: list) -> float:
    """What the loop's ``exp_avg_sq.sqrt()`` takes a step beyond a sqrt of the same size with
    no zeros (torch's CPU sqrt is slow on zeros: optimizer_cost.py), timed on the loop arm's
    own state after its timed steps, median of 7 each."""
    def timed(f) -> float:
        ts = []
        for _ in range(7):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    total = 0.0
    for o in optimizers:
        for st in o.state.values():
            sq = st.get("exp_avg_sq") if isinstance(st, dict) else None
            if isinstance(sq, torch.Tensor) and sq.is_floating_point():
                free = sq.abs() + 1.0
                total += max(0.0, timed(sq.sqrt) - timed(free.sqrt))
    return total


def _make(case: str):
    if case in BENCHMARK_ONLY:
        return BENCHMARK_ONLY[case]()
    return importlib.import_module(_script(case)).make(*CASES[case])


def measure(case: str, steps: int) -> dict:
    seen: list = []
    grab = register_optimizer_step_pre_hook(lambda o, a, k: seen.append(o))
    loop = _make(case)
    loop()
    loop()
    optimizers = list({id(o): o for o in seen}.values())
    first = set(map(id, optimizers))

    def fuse(o, a, k):  # the fused arm: fused=True before its optimizers' first step
        if id(o) not in first and not o.state:
            for g in o.param_groups:
                g["foreach"], g["fused"] = False, True

    fusing = register_optimizer_step_pre_hook(fuse)
    fused = _make(case)
    fused()
    fused()
    fusing.remove()
    grab.remove()
    params = [p for o in optimizers for g in o.param_groups for p in g["params"]
              if p.grad is not None or o.state.get(p)]
    ops = _loop_ops(loop, optimizers)

    now = {"arm": None, "t0": 0.0, "f0": 0}
    in_step = {"loop": 0.0, "fused": 0.0}
    faults = {"loop": 0, "fused": 0}

    def pre(o, a, k):
        now["t0"], now["f0"] = time.thread_time(), _minor_faults()

    def post(o, a, k):
        if now["arm"]:
            in_step[now["arm"]] += time.thread_time() - now["t0"]
            faults[now["arm"]] += _minor_faults() - now["f0"]

    hooks = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    step_t: dict[str, list[float]] = {"loop": [], "fused": []}
    opt_t: dict[str, list[float]] = {"loop": [], "fused": []}
    opt_faults: dict[str, list[int]] = {"loop": [], "fused": []}
    for i in range(steps):
        order = (("loop", loop), ("fused", fused))
        for arm, fn in order if i % 2 else order[::-1]:
            now["arm"], in_step[arm], faults[arm] = arm, 0.0, 0
            t = time.thread_time()
            fn()
            step_t[arm].append(time.thread_time() - t)
            opt_t[arm].append(in_step[arm])
            opt_faults[arm].append(faults[arm])
            now["arm"] = None
    for h in hooks:
        h.remove()
    sqrt_s = _sqrt_excess(optimizers)
    med = statistics.median
    return {"case": case, "optimizers": len(optimizers), "ops": ops, "tensors": len(params),
            "bytes": sum(p.numel() * p.element_size() for p in params),
            "loop_s": med(opt_t["loop"]), "fused_s": med(opt_t["fused"]),
            # the loop's page faults a step (mean: malloc gives temporaries back unevenly),
            # priced at PAGE_FAULT_S and taken out of the loop's time before the fit
            "faults": statistics.fmean(opt_faults["loop"]),
            "fused_faults": statistics.fmean(opt_faults["fused"]),
            # the loop's sqrt on zeros, taken out of the loop's time before the fit too
            "sqrt_s": sqrt_s,
            "step_saving_s": med(step_t["loop"]) - med(step_t["fused"])}


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def fit(rows: list[dict], cols: tuple[str, ...], target: str) -> np.ndarray:
    x = np.array([[r[c] for c in cols] for r in rows], float)
    y = np.array([r[target] - (r["faults"] * PAGE_FAULT_S + r["sqrt_s"] if target == "loop_s"
                                else 0.0) for r in rows])
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)
    return coef


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="timed steps per arm")
    p.add_argument("--only", nargs="+", choices=sorted(CASES), help="these scripts only")
    args = p.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(MODELS))
    rows = []
    print(f"{'case':20s} {'opt':>3s} {'ops':>4s} {'tensors':>7s} {'KiB':>6s} "
          f"{'loop ms':>8s} {'faults':>6s} {'sqrt+ ms':>8s} {'fused ms':>8s} {'faults':>6s} "
          f"{'step saved ms':>13s}")
    for case in args.only or CASES:
        r = measure(case, args.steps)
        rows.append(r)
        print(f"{case:20s} {r['optimizers']:3d} {r['ops']:4d} {r['tensors']:7d} "
              f"{r['bytes'] / 1024:6.0f} {r['loop_s'] * 1e3:8.3f} {r['faults']:6.0f} "
              f"{r['sqrt_s'] * 1e3:8.3f} "
              f"{r['fused_s'] * 1e3:8.3f} {r['fused_faults']:6.0f} "
              f"{r['step_saving_s'] * 1e3:13.3f}", flush=True)
    if len(rows) < 4:
        return
    a = fit(rows, ("optimizers", "ops", "bytes"), "loop_s")
    b = fit(rows, ("optimizers", "tensors", "bytes"), "fused_s")
    print(f"\nloop  = {a[0] * 1e6:.1f} us an optimizer + {a[1] * 1e6:.2f} us an op + "
          f"{a[2] * 1e9:.3f} ns a parameter byte")
    print(f"fused = {b[0] * 1e6:.1f} us an optimizer + {b[1] * 1e6:.2f} us a tensor + "
          f"{b[2] * 1e9:.3f} ns a parameter byte")
    for r in rows:
        lf = (a @ [r["optimizers"], r["ops"], r["bytes"]] + r["faults"] * PAGE_FAULT_S
              + r["sqrt_s"])
        ff = b @ [r["optimizers"], r["tensors"], r["bytes"]]
        print(f"{r['case']:20s} loop fit {(lf - r['loop_s']) / r['loop_s']:+4.0%}  "
              f"fused fit {(ff - r['fused_s']) / r['fused_s']:+4.0%}  saving priced "
              f"{(lf - ff) * 1e3:.3f} ms, measured {r['step_saving_s'] * 1e3:.3f} ms a step")


if __name__ == "__main__":
    main()
