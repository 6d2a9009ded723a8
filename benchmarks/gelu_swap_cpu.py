"""What swapping a hand-written tanh GELU for ``F.gelu(x, approximate="tanh")`` saves on this
CPU, in training: the calibration of ``dsprof/metrics/ops/library_cost.py`` (``OP_REMOVED_S``,
``INTERMEDIATE_S_PER_BYTE``, the library op's own ``CALIBRATED_S_PER_ELEMENT``).

    OMP_NUM_THREADS=1 python benchmarks/gelu_swap_cpu.py [--steps 80]

For each shape, two copies of the same small network (Linear -> GELU -> Linear, two blocks, the
same weights), one with GPT-2's hand-written GELU (``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715
x^3)))``: 8 ops, as transformers' ``NewGELUActivation`` runs it) and one with the library op,
train in alternating steps (forward, backward, no optimizer: the swap changes neither); each
arm's median thread CPU time per step gives the saving. Beside it, the rule's prediction with
the constants in the tree (``cpu_swap_saving``: the 7 ops removed, the chain's intermediate
bytes, less the library op's compute), and the library op's own time per element, forward and
backward, timed on the largest shape. Then the two removal constants that fit the measured
savings of the smallest and the largest shape exactly (the per-op term rules the first, the
per-byte term the second). No profiler runs; nothing is asserted: the figures are this
machine's, at its load (print ``uptime`` beside them).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsprof.metrics.ops.library_cost import (
    CALIBRATED_S_PER_ELEMENT,
    INTERMEDIATE_S_PER_BYTE,
    OP_REMOVED_S,
    LibraryCost,
    cpu_swap_saving,
)

# (rows, width): GPT-2 tiny's MLP activation (2 x 16 tokens, 256 wide: 8192 elements, the
# corpus's hf_gpt2) and fusion_mlp's (2048 x 256: 524288), and two between them
SHAPES = ((32, 256), (64, 1024), (512, 512), (2048, 256))
CHAIN_OPS = 8
# what the 8-op chain moves beyond the fused op's x in and y out, in tensors of x's size
# (dsprof's chain_bytes on a profiled NewGELU: 18 tensor passes op by op, 2 fused)
INTERMEDIATE_PASSES = 16


class HandGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                           * (x + 0.044715 * torch.pow(x, 3.0))))


class LibraryGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x, approximate="tanh")


def _net(width: int, act: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(m for _ in range(2)
                           for m in (nn.Linear(width, width), act(), nn.Linear(width, width))))


def measure(rows: int, width: int, steps: int) -> tuple[float, float]:
    """(hand arm's median thread CPU s a step, library arm's), alternating steps."""
    hand, lib = _net(width, HandGELU), _net(width, LibraryGELU)
    lib.load_state_dict(hand.state_dict())
    x = torch.randn(rows, width)
    times: dict[int, list[float]] = {0: [], 1: []}
    for i in range(steps * 2 + 10):
        net = (hand, lib)[i % 2]
        t0 = time.thread_time_ns()
        net(x).sum().backward()
        dt = (time.thread_time_ns() - t0) / 1e9
        if i >= 10:  # warm-up: first calls, the allocator's pools
            times[i % 2].append(dt)
        net.zero_grad(set_to_none=True)
    return statistics.median(times[0]), statistics.median(times[1])


def library_per_element(rows: int, width: int, reps: int = 40) -> tuple[float, float]:
    """F.gelu(tanh)'s thread CPU s an element, forward and backward, on (rows, width)."""
    x = torch.randn(rows, width, requires_grad=True)
    fwd, bwd = [], []
    for _ in range(reps):
        t0 = time.thread_time_ns()
        y = nn.functional.gelu(x, approximate="tanh")
        t1 = time.thread_time_ns()
        y.backward(torch.ones_like(y))
        t2 = time.thread_time_ns()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        x.grad = None
    n = rows * width
    return statistics.median(fwd) / 1e9 / n, statistics.median(bwd) / 1e9 / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=80, help="timed steps per arm and shape")
    args = p.parse_args()
    torch.set_num_threads(1)
    big = SHAPES[-1]
    lib_f, lib_b = library_per_element(*big)
    cost = LibraryCost(*CALIBRATED_S_PER_ELEMENT["gelu_tanh"], "calibrated (one thread)")
    print(f"F.gelu(tanh) on {big}: {lib_f * 1e9:.2f} ns an element forward, {lib_b * 1e9:.2f} "
          f"backward (the tree's calibration: {cost.forward_s * 1e9:.2f}, "
          f"{cost.backward_s * 1e9:.2f})")
    print(f"\n{'shape':>12} {'elements':>9} {'hand ms':>8} {'lib ms':>8} {'saved ms':>9} "
          f"{'rule ms':>8} {'rule err':>8}")
    fits = []
    for rows, width in SHAPES:
        numel = rows * width
        hand_s, lib_s = measure(rows, width, args.steps)
        saved = hand_s - lib_s
        inter = INTERMEDIATE_PASSES * 4 * numel
        fwd, bwd = cpu_swap_saving(CHAIN_OPS, inter, numel, True, cost)
        rule = 2 * (fwd + bwd)  # two instances a step
        fits.append((numel, inter, saved))
        print(f"{f'({rows}, {width})':>12} {numel:>9} {hand_s * 1e3:>8.3f} {lib_s * 1e3:>8.3f} "
              f"{saved * 1e3:>9.3f} {rule * 1e3:>8.3f} {(rule - saved) / saved:>+8.0%}")
    # solve a (per op removed, fwd + bwd) and b (per intermediate byte, fwd + bwd) from the
    # smallest and the largest shape, the library op's compute at this run's own figures
    (n1, i1, s1), (n2, i2, s2) = fits[0], fits[-1]
    lib_el = lib_f + lib_b
    y1, y2 = s1 / 2 + n1 * lib_el, s2 / 2 + n2 * lib_el  # an instance's removal, fwd + bwd
    removed = CHAIN_OPS - 1
    b = (y2 - y1) / (i2 - i1)
    a = (y1 - b * i1) / removed
    print(f"\nfit on {fits[0][0]} and {fits[-1][0]} elements: an op removed {a * 1e6:.2f} us "
          f"(forward + backward; the tree: {sum(OP_REMOVED_S) * 1e6:.2f}), an intermediate "
          f"byte {b * 1e9:.3f} ns (the tree: {sum(INTERMEDIATE_S_PER_BYTE) * 1e9:.3f})")


if __name__ == "__main__":
    main()
