"""torch.nn.MultiheadAttention self-attention encoder (not batch_first, key padding mask),
feed-forward, LayerNorm; Adam."""

import torch
from _loop import main
from torch import nn


class Encoder(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, dim)
        self.attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(dim, 2)

    def forward(self, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # [seq, batch, dim]
        a, _ = self.attn(x, x, x, key_padding_mask=pad, need_weights=False)
        x = self.norm(x + a)
        return self.out(self.ff(x).mean(0))


def make():
    torch.manual_seed(0)
    model = Encoder()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 100, (12, 4))
    pad = torch.zeros(4, 12, dtype=torch.bool)
    pad[:, 10:] = True
    y = torch.randint(0, 2, (4,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(tokens, pad), y).backward()
        opt.step()
    return step


if __name__ == "__main__":
    main(make)
