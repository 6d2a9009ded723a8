"""Scripts that start their own ranks with ``torch.multiprocessing.spawn``, as PyTorch's DDP
tutorial does, for tests/integration/test_spawned_ranks.py (each is written to a file and run
by ``python`` and by ``dsprof run``)."""

# argv: STEPS SLOW_MS FAIL [swap]; FAIL: "none", "raise" (rank 1 raises ValueError after the
# training) or "exit3" (rank 1 calls sys.exit(3)). The failure comes after every collective,
# so which rank fails first does not depend on who notices a closed connection first.
# "swap": process i joins the process group as rank 1 - i.
DDP_SPAWN = '''
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP


def train(index, world, port, steps, slow_ms, fail, swap=False):
    rank = world - 1 - index if swap else index
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(32, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 32)
    for _ in range(steps):
        opt.zero_grad()
        loss = model(x).sum()
        if rank == 1 and slow_ms:
            time.sleep(slow_ms / 1000)
        loss.backward()
        opt.step()
    dist.barrier()
    print(f"rank {rank} trained {steps} steps", flush=True)
    dist.destroy_process_group()
    if rank == 1 and fail == "raise":
        raise ValueError(f"rank {rank} gave up after {steps} steps")
    if rank == 1 and fail == "exit3":
        sys.exit(3)


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    steps, slow_ms, fail = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    swap = sys.argv[4:] == ["swap"]
    mp.spawn(train, args=(2, port, steps, slow_ms, fail, swap), nprocs=2, join=True)
    print("all ranks joined", flush=True)
'''

# a training loop fed by a DataLoader with 2 spawn-started workers: no ranks at all
SPAWN_LOADER = '''
import torch
from torch.utils.data import DataLoader, TensorDataset

if __name__ == "__main__":
    data = TensorDataset(torch.randn(64, 16), torch.randn(64, 1))
    loader = DataLoader(data, batch_size=8, num_workers=2, multiprocessing_context="spawn")
    model = torch.nn.Linear(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    steps = 0
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        steps += 1
    print(f"trained {steps} steps", flush=True)
'''

# start_processes with start_method="fork": not followed, said so
FORK_START = '''
import torch
import torch.multiprocessing as mp


def work(i):
    torch.ones(8).sum()


if __name__ == "__main__":
    mp.start_processes(work, nprocs=2, start_method="fork")
    print("forked 2", flush=True)
'''

# rank 1 raises after 3 steps while rank 0 trains on alone (no process group), so torch's join
# ends rank 0 with SIGTERM; argv: STEPS_RANK1
SIBLING_TERMINATED = '''
import sys
import time

import torch
import torch.multiprocessing as mp


def train(index, steps):
    torch.manual_seed(index)
    model = torch.nn.Linear(32, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 32)
    for step in range(10_000 if index == 0 else steps):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
        if index == 0 and step == 3:
            print("rank 0 is past step 3", flush=True)
        time.sleep(0.02)
    if index == 1:
        time.sleep(1.0)  # rank 0 has trained some steps (its window too)
        raise ValueError(f"rank 1 gave up after {steps} steps")


if __name__ == "__main__":
    mp.spawn(train, args=(int(sys.argv[1]),), nprocs=2, join=True)
'''
