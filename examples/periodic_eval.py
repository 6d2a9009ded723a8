"""A training loop that evaluates and saves a checkpoint on the training thread every N steps.

Every `--eval-every` steps it runs the model over a validation set and writes the state dict
to disk, inside the step, so one step in N is several times slower than the others. dsprof's
`step_outliers` analyzer finds those steps, sees that they recur at a fixed interval and names
it as periodic work, with what it costs per step on average.

    dsprof run examples/periodic_eval.py
"""

import argparse
import os
import tempfile

import torch
from torch import nn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--val-batches", type=int, default=12)
    args = p.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    val = [(torch.randn(256, 256), torch.randint(0, 10, (256,))) for _ in range(args.val_batches)]
    ckpt = os.path.join(tempfile.mkdtemp(prefix="periodic_eval-"), "ckpt.pt")
    for step in range(1, args.steps + 1):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        if step % args.eval_every == 0:
            with torch.no_grad():
                val_loss = sum(nn.functional.cross_entropy(model(vx), vy) for vx, vy in val)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, ckpt)
            print(f"step {step}: val loss {float(val_loss) / len(val):.4f}")
        opt.step()
    os.remove(ckpt)
    os.rmdir(os.path.dirname(ckpt))


if __name__ == "__main__":
    main()
