"""MLP classifier trained on synthetic data.

The smallest dsprof example: a 512 -> 1024 -> 1024 -> 10 multilayer perceptron with ReLU,
trained with AdamW and cross-entropy on random features whose labels come from a fixed random
"teacher" projection (so the loss actually goes down). It is a quick demo and test subject for
`dsprof run examples/mlp.py --steps 40`: a handful of large matmuls (addmm), ReLU, the loss,
backward and the fused optimizer update, with nothing else in the way.

No profiler code lives here; the script is a plain training loop and runs unmodified.
"""

import argparse
import time

import torch
from torch import nn


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=40, help="optimizer steps to run")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--in-features", type=int, default=512)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return p.parse_args()


def build_model(in_features: int, hidden: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = build_model(args.in_features, args.hidden, args.classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    # Synthetic task: labels are the argmax of a fixed random linear map of the inputs.
    teacher = torch.randn(args.in_features, args.classes)

    model.train()
    loss = torch.tensor(float("nan"))
    start = time.perf_counter()
    for _ in range(args.steps):
        x = torch.randn(args.batch_size, args.in_features)
        y = (x @ teacher).argmax(dim=1)

        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start

    ms_per_step = 1000.0 * elapsed / max(args.steps, 1)
    print(f"done: {args.steps} steps, final loss {loss.item():.4f}, {ms_per_step:.1f} ms/step")


if __name__ == "__main__":
    main()
