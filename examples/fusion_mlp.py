"""MLP with hand-written activation and normalization, trained on synthetic data.

Each block is RMSNorm -> Linear -> GELU -> Linear with a residual, all written out of
elementwise torch ops on purpose:

- the GELU is the tanh approximation, ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``:
  eight pointwise ops, each reading and writing the whole (batch, 4*width) activation;
- the RMSNorm is ``x * rsqrt(mean(x^2) + eps) * weight``: five ops where one kernel would do;
- the optimizer is AdamW with torch's default implementation, which on CPU is the
  per-parameter loop.

It is the subject of dsprof's fusion analyzer (`dsprof run examples/fusion_mlp.py`): it should
name the GELU and RMSNorm chains with their module paths (`FusionMLP.blocks.0.act`, ...), the
bytes their intermediates move, and `DS_COMPILE` / `DS_OPTIMIZER_FUSED` to apply the fixes.
`--builtin` uses nn.GELU(approximate="tanh"), nn.RMSNorm and fused AdamW instead, for comparison.

No profiler code lives here; the script is a plain training loop and runs unmodified.
"""

import argparse
import math
import time

import torch
from torch import nn


class TanhGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))
        return 0.5 * x * (1.0 + torch.tanh(inner))


class HandRMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, width: int, builtin: bool) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(width, eps=1e-6) if builtin else HandRMSNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.act = nn.GELU(approximate="tanh") if builtin else TanhGELU()
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(self.norm(x))))


class FusionMLP(nn.Module):
    def __init__(self, width: int, depth: int, classes: int, builtin: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, builtin) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=30, help="optimizer steps to run")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--builtin", action="store_true",
                   help="nn.GELU / nn.RMSNorm / fused AdamW instead of the hand-written ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = FusionMLP(args.width, args.depth, args.classes, args.builtin)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr,
                                  fused=True if args.builtin else None)
    loss_fn = nn.CrossEntropyLoss()
    teacher = torch.randn(args.width, args.classes)

    model.train()
    loss = torch.tensor(float("nan"))
    start = time.perf_counter()
    for _ in range(args.steps):
        x = torch.randn(args.batch_size, args.width)
        y = (x @ teacher).argmax(dim=1)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start

    ms_per_step = 1000.0 * elapsed / max(args.steps, 1)
    kind = "builtin" if args.builtin else "hand-written"
    print(f"done: {args.steps} steps, final loss {loss.item():.4f}, {ms_per_step:.1f} ms/step "
          f"({kind} GELU/RMSNorm)")


if __name__ == "__main__":
    main()
