"""Gradient accumulation: 4 micro-batches (each forward + backward of loss / 4) per
optimizer step, nanoGPT style; an MLP, AdamW. One step = one optimizer.step()."""

import torch
from _loop import main
from torch import nn

MICRO = 4


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(),
                          nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xs = [torch.randn(8, 64) for _ in range(MICRO)]
    ys = [torch.randint(0, 10, (8,)) for _ in range(MICRO)]

    def step() -> None:
        for x, y in zip(xs, ys):
            (nn.functional.cross_entropy(model(x), y) / MICRO).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


if __name__ == "__main__":
    main(make)
