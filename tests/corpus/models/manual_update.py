"""A loop with no optimizer (pytorch/examples word_language_model style): backward(), then
``p.data.add_(p.grad, alpha=-lr)`` by hand and ``model.zero_grad()``. Its steps can only be
seen from its one backward() per iteration."""

import torch
from _loop import main
from torch import nn


class LM(nn.Module):
    def __init__(self, vocab: int = 100, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.LSTM(dim, dim)
        self.decoder = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(tokens))
        return self.decoder(h)


def make():
    torch.manual_seed(0)
    model = LM()
    tokens = torch.randint(0, 100, (13, 4))  # [seq, batch]
    lr = 0.5

    def step() -> None:
        model.zero_grad()
        logits = model(tokens[:-1])
        nn.functional.cross_entropy(logits.reshape(-1, 100), tokens[1:].reshape(-1)).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-lr)
    return step


if __name__ == "__main__":
    main(make)
