"""An MLP whose DataLoader reads every sample from slow storage, on the training thread.

Each sample costs `--read-ms` of waiting (a sleep standing in for a disk or network read, so
the example behaves the same on any machine), and the DataLoader runs with `--num-workers 0`
by default: the training thread loads each batch itself and the model waits. This is the
input-pipeline problem dsprof's `input_pipeline` analyzer names, with the worker count that
hides the loading behind compute and the wait it removes:

    dsprof run examples/slow_loader.py
    dsprof verify RUN ID        # re-runs with DS_DATALOADER_WORKERS=N, predicted vs measured

No profiler code lives here; the script runs unmodified.
"""

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class SlowDataset(Dataset):
    """Synthetic samples that each take `read_s` to "read"."""

    def __init__(self, n: int, dim: int, classes: int, read_s: float, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)
        self.read_s = read_s

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        time.sleep(self.read_s)
        return self.x[i], self.y[i]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--read-ms", type=float, default=1.0, help="wait per sample read")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)

    data = SlowDataset(args.samples, args.dim, 10, args.read_ms / 1e3, args.seed)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.num_workers)
    model = nn.Sequential(nn.Linear(args.dim, args.hidden), nn.ReLU(),
                          nn.Linear(args.hidden, args.hidden), nn.ReLU(),
                          nn.Linear(args.hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    step, start = 0, time.perf_counter()
    while step < args.steps:
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            step += 1
            if step >= args.steps:
                break
    ms = 1e3 * (time.perf_counter() - start) / args.steps
    print(f"done: {args.steps} steps, {ms:.1f} ms/step")


if __name__ == "__main__":
    main()
