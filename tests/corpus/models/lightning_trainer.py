"""PyTorch Lightning ``Trainer`` on a small CNN classifier: Lightning calls
``optimizer.step(closure)``, so forward and backward run inside the optimizer step."""

import argparse
import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def build_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def data(n: int):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def reference():
    """One forward + backward of the same network on one batch."""
    torch.manual_seed(0)
    net = build_net()
    x, y = data(8)

    def step() -> None:
        nn.functional.cross_entropy(net(x), y).backward()
    return step


def main() -> None:
    import lightning as L

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = build_net()

        def training_step(self, batch, _index):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    steps = parser.parse_args().steps
    torch.manual_seed(0)
    x, y = data(8 * steps)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=out)
        trainer.fit(Classifier(), loader)
    print(f"done {steps} steps")


if __name__ == "__main__":
    main()
