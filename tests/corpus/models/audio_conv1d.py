"""Conv1d audio stack (wav2letter / TCN style): a strided wide stem, dilated convs with
padding='same', a grouped conv and a 1x1 projection over a raw 1-channel waveform; SGD."""

import torch
from _loop import classifier_step, main
from torch import nn


class AudioNet(nn.Module):
    def __init__(self, classes: int = 12) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, 32, 80, stride=16, padding=38)
        self.dilated = nn.Sequential(
            nn.Conv1d(32, 32, 3, padding="same", dilation=2), nn.BatchNorm1d(32), nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding="same", dilation=4), nn.BatchNorm1d(32), nn.ReLU())
        self.grouped = nn.Conv1d(32, 64, 5, stride=2, padding=2, groups=4)
        self.project = nn.Conv1d(64, 64, 1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dilated(torch.relu(self.stem(x)))
        h = torch.relu(self.project(torch.relu(self.grouped(h))))
        return self.fc(h.mean(-1))


def make():
    torch.manual_seed(0)
    model = AudioNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 1, 4000), torch.randint(0, 12, (4,))

    return classifier_step(model, opt, x, y)


if __name__ == "__main__":
    main(make)
