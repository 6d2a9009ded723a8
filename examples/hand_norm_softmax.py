"""A small attention model with a hand-written LayerNorm, softmax and RMSNorm, trained on
synthetic data: the subject of the memory promises of dsprof's library-op swaps.

Each block is ``x + proj(softmax(q k^T) v)`` after a hand LayerNorm, then
``x + down(gelu(up(rmsnorm(x))))``, with each hand-written piece its own module, so the
fusion analyzer can swap it for the library op (``DS_LIBRARY_OP``):

- ``HandLayerNorm``: ``(x - mean) * rsqrt(mean((x - mean)^2) + eps) * w + b`` -> F.layer_norm;
- ``HandSoftmax``: ``exp(x - amax(x)) / sum(...)`` over the scores -> torch.softmax;
- ``HandRMSNorm``: ``x * rsqrt(mean(x^2) + eps) * w`` -> F.rms_norm (examples/fusion_mlp.py's).

q is scaled before the matmul so that the softmax module holds the whole softmax chain.
No profiler code lives here; the script is a plain training loop and runs unmodified.
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn


class HandLayerNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x - x.mean(-1, keepdim=True)
        return xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight \
            + self.bias


class HandSoftmax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = (x - x.amax(-1, keepdim=True)).exp()
        return e / e.sum(-1, keepdim=True)


class HandRMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1 = HandLayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.softmax = HandSoftmax()
        self.proj = nn.Linear(width, width)
        self.norm2 = HandRMSNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        att = self.softmax((q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1))
        x = x + self.proj(att @ v)
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class Model(nn.Module):
    def __init__(self, width: int, depth: int, classes: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(1))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12, help="optimizer steps to run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    model = Model(args.width, args.depth, args.classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    teacher = torch.randn(args.width, args.classes)
    loss = torch.tensor(float("nan"))
    start = time.perf_counter()
    for _ in range(args.steps):
        x = torch.randn(args.batch_size, args.seq_len, args.width)
        y = (x.mean(1) @ teacher).argmax(dim=1)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    ms = 1000.0 * (time.perf_counter() - start) / max(args.steps, 1)
    print(f"done: {args.steps} steps, final loss {loss.item():.4f}, {ms:.1f} ms/step")


if __name__ == "__main__":
    main()
