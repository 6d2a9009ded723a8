"""An MLP trained under bf16 autocast on CPU: at small sizes the casts cost more than bf16 saves.

`in -> width -> width -> 10` with ReLU, SGD and cross-entropy on random data; the forward runs
under ``torch.autocast("cpu", dtype=torch.bfloat16)`` unless ``--fp32``. At the defaults
(64 -> 256 -> 256 -> 10, batch 32) a step took 0.89-0.92 ms in fp32 and 1.08-1.12 ms under
autocast on one thread of a Xeon with AMX; at ``--batch 256 --width 1024`` bf16 is the faster
there, while a CPU that emulates bf16 (no AVX512-BF16 or AMX: an AVX2 EPYC) runs it slower at
every size (docs/analyzers.md, CPU autocast). ``dsprof run examples/autocast_mlp.py`` finds it;
``DS_AUTOCAST=off`` runs the same script with its autocast disabled. ``--print-dtype`` prints
the dtype the first layer's output had (what the forward really ran in) and nothing else.
``--conv`` trains a small CNN instead: 3 -> width -> width 3x3 convolutions on 16x16 images,
average pooling, a Linear to 10 (the convolution sizes of benchmarks/cpu_autocast.py).
"""

import argparse

import torch
from torch import nn


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--in-features", type=int, default=64)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--fp32", action="store_true", help="no autocast")
    p.add_argument("--conv", action="store_true", help="a CNN on 16x16 images, not the MLP")
    p.add_argument("--print-dtype", action="store_true")
    return p.parse_args()


def build(in_features: int, width: int, conv: bool = False) -> nn.Module:
    if conv:
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, width),
                         nn.ReLU(), nn.Linear(width, 10))


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    model = build(args.in_features, args.width, args.conv)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(args.batch, 3, 16, 16) if args.conv else torch.randn(args.batch,
                                                                         args.in_features)
    y = torch.randint(0, 10, (args.batch,))
    seen: list[torch.dtype] = []
    if args.print_dtype:
        model[0].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    for _ in range(args.steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
            logits = model(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()
    if args.print_dtype:
        print(f"forward dtype {seen[-1]}")
    print(f"done {args.steps} steps")


if __name__ == "__main__":
    main()
