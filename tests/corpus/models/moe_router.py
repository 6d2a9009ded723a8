"""A mixture-of-experts language model as held-out scripts write it: a linear router picks the
top 2 of 4 feed-forward experts per token, each expert runs on the rows ``torch.nonzero`` hands
it and ``index_add_`` scatters its weighted output back (a host sync per expert on a GPU);
layer-norm residual blocks, gradient clipping, AdamW. Every token reaches two experts, so each
step does the same FLOPs whatever the routing."""

import torch
import torch.nn.functional as F
from _loop import main
from torch import nn


class Experts(nn.Module):
    def __init__(self, dim: int = 64, n: int = 4, k: int = 2) -> None:
        super().__init__()
        self.k = k
        self.router = nn.Linear(dim, n)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))
            for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, chosen = self.router(x).softmax(-1).topk(self.k, dim=-1)
        out = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == i, as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(x[rows]) * weight[rows, slot, None])
        return out


class MoELM(nn.Module):
    def __init__(self, vocab: int = 100, dim: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Experts(dim) for _ in range(blocks))
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for block in self.blocks:
            h = h + block(F.layer_norm(h, h.shape[-1:]))
        return self.head(h)


def make():
    torch.manual_seed(0)
    model = MoELM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens, targets = torch.randint(0, 100, (256,)), torch.randint(0, 100, (256,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(tokens), targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


if __name__ == "__main__":
    main(make)
