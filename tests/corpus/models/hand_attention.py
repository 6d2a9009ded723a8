"""Hand-written single-head self-attention as a held-out script writes it: 3-D tensors, no
mask, no heads split, ``softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v``, inside
a module that also projects q, k, v and the output; Adam."""

import math

import torch
from _loop import classifier_step, main
from torch import nn


class Attend(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        d = q.shape[-1]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return self.proj(att @ v)


class Classifier(nn.Module):
    def __init__(self, vocab: int = 100, dim: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attend = Attend(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # [batch, seq, dim]
        return self.head((x + self.attend(x)).mean(1))


def make():
    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tokens, y = torch.randint(0, 100, (8, 32)), torch.randint(0, 4, (8,))
    return classifier_step(model, opt, tokens, y)


if __name__ == "__main__":
    main(make)
