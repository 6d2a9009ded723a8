"""Embedding-heavy recommender (DLRM style): three nn.EmbeddingBag tables (sum/mean pooling
over variable-length bags given by offsets), a dense-feature MLP, pairwise dot interaction and
a top MLP; Adagrad, binary cross-entropy."""

import torch
from _loop import main
from torch import nn


class Recommender(nn.Module):
    def __init__(self, rows: int = 5000, dim: int = 16) -> None:
        super().__init__()
        self.tables = nn.ModuleList([nn.EmbeddingBag(rows, dim, mode=m)
                                     for m in ("sum", "mean", "sum")])
        self.bottom = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, dim))
        self.top = nn.Sequential(nn.Linear(dim + 6, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, dense, ids, offsets):
        feats = [self.bottom(dense)] + [t(i, o) for t, i, o in zip(self.tables, ids, offsets)]
        z = torch.stack(feats, 1)
        inter = torch.bmm(z, z.transpose(1, 2))
        iu = torch.triu_indices(4, 4, 1)
        return self.top(torch.cat([feats[0], inter[:, iu[0], iu[1]]], 1)).squeeze(1)


def make():
    torch.manual_seed(0)
    model = Recommender()
    opt = torch.optim.Adagrad(model.parameters(), lr=0.01)
    batch = 32
    dense = torch.randn(batch, 8)
    lengths = [torch.randint(1, 6, (batch,)) for _ in range(3)]
    ids = [torch.randint(0, 5000, (int(n.sum()),)) for n in lengths]
    offsets = [torch.cat([torch.zeros(1, dtype=torch.long), n.cumsum(0)[:-1]]) for n in lengths]
    labels = torch.randint(0, 2, (batch,)).float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(dense, ids, offsets)
        nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
        opt.step()
    return step


if __name__ == "__main__":
    main(make)
