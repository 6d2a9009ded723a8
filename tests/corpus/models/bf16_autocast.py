"""bf16 autocast on CPU: a conv + MLP classifier whose forward runs under
``torch.autocast("cpu", dtype=torch.bfloat16)``; the loss and the optimizer in fp32; SGD."""

import torch
from _loop import main
from torch import nn


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 64),
                          nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()
    return step


if __name__ == "__main__":
    main(make)
