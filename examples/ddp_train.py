"""Data-parallel MLP training on CPU with DistributedDataParallel over gloo (synthetic data).

Run it under torch.distributed's launcher, with or without dsprof:

    torchrun --nproc-per-node 2 examples/ddp_train.py --steps 20
    dsprof run --nproc-per-node 2 examples/ddp_train.py --steps 20
    torchrun --nproc-per-node 2 -m dsprof run examples/ddp_train.py --steps 20

Each rank trains the same MLP on its own shard of random features whose labels come from a
fixed random "teacher" projection (so the loss goes down); DDP averages the gradients with
gloo all-reduces in buckets of ``--bucket-cap-mb`` during backward. ``--slow-rank R`` makes
rank R sleep ``--slow-ms`` before each backward (a straggler), ``--die-rank R --die-step S``
makes rank R kill itself with SIGKILL at step S (a crashed rank), ``--compress bf16|fp16``
registers DDP's gradient compression hook. With one process (plain ``python``) it starts a
one-rank group itself.

No profiler code lives here; the script is a plain training loop and runs unmodified.
"""

import argparse
import os
import signal
import socket
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=20, help="optimizer steps to run")
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--in-features", type=int, default=256)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--bucket-cap-mb", type=float, default=1.0)
    p.add_argument("--compress", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--slow-rank", type=int, default=-1)
    p.add_argument("--slow-ms", type=float, default=20.0)
    p.add_argument("--die-rank", type=int, default=-1)
    p.add_argument("--die-step", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per rank")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if "RANK" not in os.environ:  # plain `python examples/ddp_train.py`: a one-rank group
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts them)
    model = nn.Sequential(
        nn.Linear(args.in_features, args.hidden), nn.ReLU(),
        nn.Linear(args.hidden, args.hidden), nn.ReLU(),
        nn.Linear(args.hidden, args.classes),
    )
    ddp = DDP(model, bucket_cap_mb=args.bucket_cap_mb)
    if args.compress != "none":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        hook = (default_hooks.bf16_compress_hook if args.compress == "bf16"
                else default_hooks.fp16_compress_hook)
        ddp.register_comm_hook(state=None, hook=hook)
    opt = torch.optim.AdamW(ddp.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    gen = torch.Generator().manual_seed(1234 + rank)  # each rank its own shard
    teacher = torch.randn(args.in_features, args.classes, generator=torch.Generator().manual_seed(7))
    t0 = time.perf_counter()
    for step in range(args.steps):
        if rank == args.die_rank and step == args.die_step:
            os.kill(os.getpid(), signal.SIGKILL)
        x = torch.randn(args.batch_size, args.in_features, generator=gen)
        y = (x @ teacher).argmax(dim=1)
        loss = loss_fn(ddp(x), y)
        if rank == args.slow_rank:
            time.sleep(args.slow_ms / 1e3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - t0
    if rank == 0:
        print(f"rank 0/{world}: trained {args.steps} steps in {elapsed:.2f}s, "
              f"final loss {loss.item():.4f}")
    # torch 2.13 + gloo: freeing a DDP model can hang when a gloo worker thread is still freeing
    # its last all-reduce (~ProcessGroupGloo joins it with the GIL held; it waits for the GIL).
    # A barrier, then a short sleep with the GIL released, lets the workers go idle first.
    dist.barrier()
    time.sleep(0.1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
