"""The command line every corpus script shares: ``--steps N`` training iterations, then one
line ``done N steps``. A script's ``make()`` returns the callable that runs one iteration;
tests import the script and hand the same callable to FlopCounterMode."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def main(make: Callable[[], Callable[[], object]], default_steps: int = 6) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=default_steps)
    args = parser.parse_args()
    step = make()
    for _ in range(args.steps):
        step()
    print(f"done {args.steps} steps")


def classifier_step(model: Any, opt: Any, x: Any, y: Any) -> Callable[[], None]:
    """One iteration of the plain classification loop most corpus scripts train with:
    zero_grad, cross-entropy of ``model(x)`` against ``y``, backward, step."""
    import torch

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step
