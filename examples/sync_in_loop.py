"""A training loop that reads metrics back to the host every step.

`loss.item()` for a running average, `(pred == y).sum().item()` for accuracy and
`.cpu().numpy()` for a histogram of predictions, every step: on a GPU each of those calls
blocks Python until all queued kernels have run (a host-device synchronization), so the CPU
cannot launch ahead and the GPU idles between steps. On CPU they cost nothing, and dsprof says
so; the lines are still named, because that is what a GPU run of this script would pay for.

    dsprof run examples/sync_in_loop.py
    dsprof analyze RUN          # host_syncs: one finding per line

`--every N` reads the metrics every N steps instead (the fix). `--device` defaults to cuda when
there is a GPU, else cpu; `--device cuda` on a machine without one stops with one line (exit 2).
"""

import argparse

import torch
from _device import pick_device
from torch import nn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--every", type=int, default=1, help="read metrics every N steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    dev = pick_device(args.device, "sync_in_loop.py")
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(args.batch_size, 256, device=dev)
    y = torch.randint(0, 10, (args.batch_size,), device=dev)
    total, correct = 0.0, 0
    hist = [0] * 10
    for step in range(args.steps):
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        if step % args.every == 0:
            total += loss.item()
            correct += (logits.argmax(1) == y).sum().item()
            for c in logits.argmax(1).cpu().numpy():
                hist[int(c)] += 1
    print(f"done: mean loss {total / max(1, args.steps // args.every):.4f}, "
          f"accuracy {correct / (args.batch_size * max(1, args.steps // args.every)):.3f}")


if __name__ == "__main__":
    main()
