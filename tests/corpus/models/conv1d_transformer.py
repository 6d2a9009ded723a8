"""Conv1d stem (padding=1, the layout that crashed ingest) + transformer encoder, Adam.

nn.Conv1d(8, 96, 3, padding=1) over a [B, 8, T] signal, then two nn.TransformerEncoderLayer
blocks (batch_first, SDPA on CPU) and a mean-pooled classifier; synthetic data, random init.
"""

import torch
from _loop import main
from torch import nn


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(8, 96, 3, padding=1)
        layer = nn.TransformerEncoderLayer(96, 4, 192, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(96, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x).transpose(1, 2)
        return self.head(self.encoder(h).mean(1))


def make():
    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 8, 32), torch.randint(0, 5, (4,))

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


if __name__ == "__main__":
    main(make)
