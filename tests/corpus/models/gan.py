"""DCGAN-style GAN with two optimizers: a ConvTranspose2d generator and a Conv2d
discriminator (their own classes, as in pytorch/examples' DCGAN), each with its own Adam; per
iteration one D step (real + fake) and one G step."""

import torch
from _loop import main
from torch import nn

NZ = 16


class Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, 64, 4, 1, 0, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(True),
            nn.ConvTranspose2d(32, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Discriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(3, 32, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(32, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 1, 4, 1, 0, bias=False), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def make():
    torch.manual_seed(0)
    net_g, net_d = Generator(), Discriminator()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    real = torch.randn(4, 3, 16, 16)
    noise = torch.randn(4, NZ, 1, 1)
    ones, zeros = torch.ones(4, 1), torch.zeros(4, 1)

    def step() -> None:
        net_d.zero_grad()
        fake = net_g(noise)
        (bce(net_d(real), ones) + bce(net_d(fake.detach()), zeros)).backward()
        opt_d.step()
        net_g.zero_grad()
        bce(net_d(fake), ones).backward()
        opt_g.step()
    return step


if __name__ == "__main__":
    main(make)
