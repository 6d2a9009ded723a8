"""Plain DistributedDataParallel over gloo (2 ranks under ``dsprof run --nproc-per-node 2``):
an MLP, SGD, a different synthetic batch per rank, ``destroy_process_group()`` at the end."""

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 4))


def batch(rank: int):
    g = torch.Generator().manual_seed(rank)
    return torch.randn(16, 32, generator=g), torch.randint(0, 4, (16,), generator=g)


def reference():
    """One forward + backward of one rank's replica (DDP adds an all-reduce, no FLOPs)."""
    torch.manual_seed(0)
    model = build()
    x, y = batch(0)

    def step() -> None:
        nn.functional.cross_entropy(model(x), y).backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    steps = parser.parse_args().steps
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(build())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = batch(rank)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    # torch 2.13 + gloo: freeing a DDP model can hang when a gloo worker thread is still freeing
    # its last all-reduce (~ProcessGroupGloo joins it with the GIL held; it waits for the GIL).
    # A barrier, then a short sleep with the GIL released, lets the workers go idle first.
    dist.barrier()
    time.sleep(0.1)
    dist.destroy_process_group()
    print(f"done {steps} steps")


if __name__ == "__main__":
    main()
