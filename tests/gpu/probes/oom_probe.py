"""Fills the GPU past ``torch.cuda.mem_get_info()``'s free bytes at known lines.

Step 5 (inside a profiled window that starts at step 3) first takes half the free memory in
``fill()`` (the line marked FILL-SITE: what filled memory), then asks ``grab()`` for more than
what is left (free + 1 GiB, the line marked OOM-SITE): the caching allocator raises
``torch.OutOfMemoryError``, which ends the script with status 1. Plain device allocations only
(cudaMalloc through the caching allocator), never managed memory.
"""

from __future__ import annotations

import torch


def fill(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8, device="cuda")  # FILL-SITE


def grab(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8, device="cuda")  # OOM-SITE


def main() -> None:
    model = torch.nn.Linear(1024, 1024).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, 1024, device="cuda")
    held = []
    for step in range(8):
        opt.zero_grad()
        model(x).sum().backward()
        if step == 5:
            free, _ = torch.cuda.mem_get_info()
            held.append(fill(free // 2))
            free, _ = torch.cuda.mem_get_info()
            held.append(grab(free + (1 << 30)))
        opt.step()
    print(len(held))


if __name__ == "__main__":
    main()
