"""LSTM + GRU language model (word_language_model style, with an optimizer): Embedding,
2-layer LSTM, 1-layer GRU, tied-size decoder; SGD with gradient clipping."""

import torch
from _loop import main
from torch import nn


class RNNLM(nn.Module):
    def __init__(self, vocab: int = 200, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=2, batch_first=True)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.decoder = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(tokens))
        h, _ = self.gru(h)
        return self.decoder(h)


def make():
    torch.manual_seed(0)
    model = RNNLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tokens = torch.randint(0, 200, (4, 17))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1])
        nn.functional.cross_entropy(logits.reshape(-1, 200), tokens[:, 1:].reshape(-1)).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
    return step


if __name__ == "__main__":
    main(make)
