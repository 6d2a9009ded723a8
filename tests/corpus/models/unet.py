"""UNet-style encoder-decoder for segmentation: Conv2d + MaxPool down, ConvTranspose2d
(kernel 2, stride 2) up, skip connections by concatenation; Adam, per-pixel cross-entropy."""

import torch
from _loop import classifier_step, main
from torch import nn


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.down1, self.down2 = double_conv(3, 16), double_conv(16, 32)
        self.bottom = double_conv(32, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec2 = double_conv(64, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec1 = double_conv(32, 16)
        self.out = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(nn.functional.max_pool2d(d1, 2))
        b = self.bottom(nn.functional.max_pool2d(d2, 2))
        u2 = self.dec2(torch.cat([self.up2(b), d2], 1))
        u1 = self.dec1(torch.cat([self.up1(u2), d1], 1))
        return self.out(u1)


def make():
    torch.manual_seed(0)
    model = UNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))

    return classifier_step(model, opt, x, y)


if __name__ == "__main__":
    main(make)
