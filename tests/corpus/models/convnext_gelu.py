"""A ConvNeXt-style image classifier with a hand-written tanh GELU, as scripts copy it from
papers: depthwise 3x3 conv, pointwise expansion, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715
x^3)))`` on 4-D activations (8 x 64 x 32 x 32), pointwise projection, residual; SGD with
momentum. The GELU is not GPT-2's and its tensors are 4-D: a held-out case for the CPU
GELU-swap prices (metrics/ops/library_cost.py)."""

import math

import torch
from _loop import classifier_step, main
from torch import nn


class TanhGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                           * (x + 0.044715 * torch.pow(x, 3.0))))


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.expand = nn.Conv2d(channels, 2 * channels, 1)
        self.act = TanhGELU()
        self.project = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.act(self.expand(self.depthwise(x))))


class ConvNeXtTiny(nn.Module):
    def __init__(self, channels: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(Block(channels), Block(channels))
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def make():
    torch.manual_seed(0)
    model = ConvNeXtTiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    return classifier_step(model, opt, x, y)


if __name__ == "__main__":
    main(make)
