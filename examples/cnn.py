"""Small CNN image classifier trained on synthetic images through a DataLoader.

Four Conv2d -> BatchNorm2d -> ReLU blocks (two downsample with stride 2, one with MaxPool),
global average pooling and a Linear head, trained with SGD + momentum and cross-entropy. Data
is a TensorDataset of random 3x32x32 images with random labels, served by a
torch.utils.data.DataLoader (`--num-workers`, default 0); the loop runs over epochs of the
loader until `--steps` optimizer steps have run.

It is a demo and test subject for `dsprof run examples/cnn.py --steps 40`, and a target for
later analyzers: the Conv-BN-ReLU blocks (fusion / channels_last candidates) and the DataLoader
(input-pipeline stalls, worker count, pin_memory).

No profiler code lives here; the script is a plain training loop and runs unmodified.
"""

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def build_model(classes: int) -> nn.Module:
    return nn.Sequential(
        conv_bn_relu(3, 32),               # 32x32
        conv_bn_relu(32, 64, stride=2),    # 16x16
        nn.MaxPool2d(2),                   # 8x8
        conv_bn_relu(64, 128),             # 8x8
        conv_bn_relu(128, 128, stride=2),  # 4x4
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, classes),
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=40, help="optimizer steps to run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    # 2048 samples / 64 per batch = 32 steps per epoch, so the default 40 steps cross an epoch.
    p.add_argument("--samples", type=int, default=2048, help="synthetic dataset size")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    images = torch.randn(args.samples, 3, 32, 32)
    labels = torch.randint(0, args.classes, (args.samples,))
    loader = DataLoader(
        TensorDataset(images, labels),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    if len(loader) == 0:
        raise SystemExit(f"--samples {args.samples} is smaller than --batch-size {args.batch_size}")

    model = build_model(args.classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()

    model.train()
    step = 0
    loss = torch.tensor(float("nan"))
    start = time.perf_counter()
    while step < args.steps:
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            step += 1
            if step >= args.steps:
                break
    elapsed = time.perf_counter() - start

    ms_per_step = 1000.0 * elapsed / max(args.steps, 1)
    epochs = args.steps / len(loader)
    print(f"done: {args.steps} steps ({epochs:.2f} epochs), final loss {loss.item():.4f}, "
          f"{ms_per_step:.1f} ms/step")


if __name__ == "__main__":
    main()
