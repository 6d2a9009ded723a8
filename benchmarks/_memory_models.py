"""Training script for benchmarks/memory_advice.py: three models, two sizes each, fed by a
DataLoader (so ``DS_BATCH_SIZE`` changes the batch with no code change).

* ``transformer``: the causal Transformer LM of examples/transformer_lm.py on random tokens.
* ``cnn``: the Conv-BN-ReLU classifier of examples/cnn.py on random images.
* ``resmlp``: a residual MLP (pre-LayerNorm blocks of Linear-GELU-Linear), a third shape of
  model: wide activations, no attention, no convolutions.

Plain PyTorch, no dsprof code: ``dsprof run benchmarks/_memory_models.py --model cnn``.
"""

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import cnn
import transformer_lm

SIZES = {
    "transformer": {"small": {"d_model": 64, "layers": 2, "seq": 64, "vocab": 512},
                    "large": {"d_model": 96, "layers": 4, "seq": 96, "vocab": 512}},
    "cnn": {"small": {"image": 32}, "large": {"image": 48}},
    "resmlp": {"small": {"width": 256, "depth": 3}, "large": {"width": 384, "depth": 6}},
}


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ResMLP(nn.Module):
    def __init__(self, width: int, depth: int, in_features: int = 64, classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def build(name: str, size: str, samples: int) -> tuple[nn.Module, TensorDataset, nn.Module]:
    cfg = SIZES[name][size]
    g = torch.Generator().manual_seed(0)
    if name == "transformer":
        model = transformer_lm.TransformerLM(cfg["vocab"], cfg["d_model"], 4, cfg["layers"],
                                             cfg["seq"])
        tokens = torch.randint(0, cfg["vocab"], (samples, cfg["seq"] + 1), generator=g)
        data = TensorDataset(tokens[:, :-1], tokens[:, 1:])
        return model, data, _TokenLoss(cfg["vocab"])
    if name == "cnn":
        images = torch.randn(samples, 3, cfg["image"], cfg["image"], generator=g)
        labels = torch.randint(0, 10, (samples,), generator=g)
        return cnn.build_model(10), TensorDataset(images, labels), nn.CrossEntropyLoss()
    x = torch.randn(samples, 64, generator=g)
    y = torch.randint(0, 10, (samples,), generator=g)
    return ResMLP(cfg["width"], cfg["depth"]), TensorDataset(x, y), nn.CrossEntropyLoss()


class Cycled(Dataset):
    """A long dataset cycling over a small pool of samples: any batch size finds batches, and
    the data held in memory stays small next to what the model uses."""

    def __init__(self, pool: TensorDataset, length: int = 1 << 20):
        self.pool, self.length = pool, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.pool[i % len(self.pool)]


class _TokenLoss(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", choices=sorted(SIZES), default="transformer")
    p.add_argument("--size", choices=("small", "large"), default="small")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, pool, loss_fn = build(args.model, args.size, samples=64)
    loader = DataLoader(Cycled(pool), batch_size=args.batch_size, shuffle=False, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    step = 0
    while step < args.steps:
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
            if step >= args.steps:
                break
    print(f"done: {step} steps, loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
