"""A training loop with the classic memory leak: summing a loss tensor, not its value.

Each step also measures the loss on a held-out batch, and adds it up with
`val_loss_sum += val_loss`. That loss was computed with autograd on (no `torch.no_grad()`), so
it requires grad, and `val_loss_sum` carries an autograd graph that links every step's graph:
nothing ever calls backward on them, so each step's saved activations stay alive until the
loop ends, and memory grows by that much per step. The fix is `val_loss_sum += val_loss.item()`
(or computing it under `torch.no_grad()`). `--fixed` runs the corrected loop, for comparison.

    dsprof run examples/leaky_loss.py --steps 12      # dsprof names the line below
    dsprof run examples/leaky_loss.py --steps 12 --fixed

No profiler code lives here; the script is a plain training loop and runs unmodified.
"""

import argparse

import torch
from torch import nn


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--fixed", action="store_true", help="accumulate loss.item() instead")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(256, args.hidden), nn.Tanh(), nn.Linear(args.hidden, args.hidden),
                          nn.Tanh(), nn.Linear(args.hidden, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x_val = torch.randn(args.batch_size, 256)
    y_val = torch.randint(0, 10, (args.batch_size,))
    val_loss_sum = 0.0
    for _ in range(args.steps):
        x = torch.randn(args.batch_size, 256)
        y = torch.randint(0, 10, (args.batch_size,))
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        val_loss = nn.functional.cross_entropy(model(x_val), y_val)
        if args.fixed:
            val_loss_sum += val_loss.item()
        else:
            val_loss_sum += val_loss  # the leak: keeps every step's graph alive
    print(f"done: {args.steps} steps, mean held-out loss {float(val_loss_sum) / args.steps:.4f}")


if __name__ == "__main__":
    main()
