"""A torch.compile'd model: an MLP with LayerNorm compiled with the default inductor backend,
trained eagerly around it (loss, backward, Adam). The first step compiles."""

import torch
from _loop import main
from torch import nn


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 64),
                         nn.GELU(), nn.Linear(64, 10))


def make(compile_model: bool = True):
    torch.manual_seed(0)
    model = build()
    run = torch.compile(model) if compile_model else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(16, 32), torch.randint(0, 10, (16,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(run(x), y).backward()
        opt.step()
    return step


def reference():
    """The same step eagerly: compile changes how, not what, is computed."""
    return make(compile_model=False)


if __name__ == "__main__":
    main(make)
