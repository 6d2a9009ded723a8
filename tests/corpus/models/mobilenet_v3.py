"""MobileNetV3-style network: inverted residuals with depthwise 3x3/5x5 convs (groups ==
channels, stride 1 and 2), squeeze-excite, Hardswish; RMSprop. Built here (no torchvision)."""

import torch
from _loop import classifier_step, main
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(8, c // 4), 1)
        self.fc2 = nn.Conv2d(max(8, c // 4), c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_exp: int, c_out: int, k: int, stride: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c_in, c_exp, 1, bias=False),
                                    nn.BatchNorm2d(c_exp), nn.Hardswish())
        self.depthwise = nn.Sequential(
            nn.Conv2d(c_exp, c_exp, k, stride, k // 2, groups=c_exp, bias=False),
            nn.BatchNorm2d(c_exp), nn.Hardswish())
        self.se = SqueezeExcite(c_exp)
        self.project = nn.Sequential(nn.Conv2d(c_exp, c_out, 1, bias=False),
                                     nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.residual else out


class MobileNetV3(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.Hardswish())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 64, 24, 3, 2),
            InvertedResidual(24, 72, 24, 3, 1),
            InvertedResidual(24, 96, 40, 5, 2),
            InvertedResidual(40, 120, 40, 5, 1),
        )
        self.head = nn.Sequential(nn.Conv2d(40, 128, 1), nn.Hardswish(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def make():
    torch.manual_seed(0)
    model = MobileNetV3()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))

    return classifier_step(model, opt, x, y)


if __name__ == "__main__":
    main(make)
