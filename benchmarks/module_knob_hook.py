"""What a module knob's global forward pre-hook costs a training step while it stays, and so
what removing it once every pattern matched saves (dsprof/apply/module_knob.py).

    OMP_NUM_THREADS=1 python benchmarks/module_knob_hook.py [--steps 400] [--layers 4] ...

examples/transformer_lm.py's model trains under the real ``DS_GRADIENT_CHECKPOINTING`` knob on
its blocks (installed as a session would, through ``dsprof.apply``); after the first step the
knob has removed its hook. Then steps alternate between three arms in one process: ``kept``
registers the hook as it was before the knob removed it (the per-call path the first knob took
for a module it had seen: an ``is_compiling()`` check and a dict lookup, with every module of
the model in the dict), ``knob`` registers the knob's own pre-hook and call-stack forward hook
(their path for a module already named, as while a pattern still waits for another root),
``removed`` runs with no hook. Alternating steps share the machine's
load; the median thread CPU time of a step (forward, backward with the checkpoint's recompute,
AdamW step) is printed per arm, with their difference per step and per module call. Nothing is
asserted: the figures are this machine's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400, help="timed steps, both arms together")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    args = p.parse_args()
    sys.path.insert(0, str(EXAMPLES))
    from transformer_lm import TransformerLM

    from dsprof.apply import from_env, install

    torch.manual_seed(0)
    vocab = 256
    model = TransformerLM(vocab, args.d_model, 4, args.layers, args.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idx = torch.randint(0, vocab, (args.batch_size, args.seq_len))

    def step() -> None:
        logits = model(idx[:, :-1])
        F.cross_entropy(logits.reshape(-1, vocab), idx[:, 1:].reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    applied = install(from_env({"DS_GRADIENT_CHECKPOINTING": "TransformerLM.blocks.*"}, "cpu"))
    knob = applied.knobs[0]
    step()
    # a knob's hooks as they stay while a pattern waits for a root that is never called (it
    # matches nothing here, so the model is not changed twice); registered per step below, its
    # first "knob" step names the model's modules
    waiting = install(from_env({"DS_GRADIENT_CHECKPOINTING": "Other.x"}, "cpu")).knobs[0]
    waiting._remove_hook()
    print(f"checkpointed: {', '.join(knob.report()['checkpointed'])}; "
          f"hook left after the first step: {not knob.hooked}")

    seen = {id(m): m for m in model.modules()}

    def kept_hook(module: Any, args: Any) -> None:  # the old knob's path for a seen module
        if torch.compiler.is_compiling() or id(module) in seen:
            return

    calls = 0

    def count(module: Any, args: Any) -> None:
        nonlocal calls
        calls += 1

    handle = register_module_forward_pre_hook(count)
    step()
    handle.remove()
    for _ in range(10):  # warm-up of both paths
        step()
    cpu: dict[str, list[int]] = {"kept": [], "knob": [], "removed": []}
    arms = list(cpu)
    for i in range(args.steps):
        arm = arms[i % len(arms)]
        handles = []
        if arm == "kept":
            handles = [register_module_forward_pre_hook(kept_hook)]
        elif arm == "knob":
            handles = [register_module_forward_pre_hook(waiting._pre),
                       register_module_forward_hook(waiting._post, always_call=True)]
        t0 = time.thread_time_ns()
        step()
        cpu[arm].append(time.thread_time_ns() - t0)
        for handle in handles:
            handle.remove()
    applied.uninstall()
    med = {arm: statistics.median(v) / 1e3 for arm, v in cpu.items()}
    diff = med["kept"] - med["removed"]
    print(f"module calls a step (forward and the checkpoint's recompute): {calls}")
    for arm in arms:
        print(f"hook {arm:7s}: median thread CPU {med[arm]:9.1f} us a step "
              f"({len(cpu[arm])} steps)")
    print(f"the kept hook costs {diff:.1f} us a step, {diff / calls:.2f} us a module call "
          f"({100 * diff / med['removed']:.1f} % of the step)")
    knob_diff = med["knob"] - med["removed"]
    print(f"the knob's hooks, kept, cost {knob_diff:.1f} us a step, "
          f"{knob_diff / calls:.2f} us a module call")


if __name__ == "__main__":
    main()
