"""A script's own saved-tensor hooks run as without dsprof. dsprof pushes a pair of its own
while it records a step in detail (collectors/activations.py); hooks form one stack per thread,
and the top pair alone is called. A pair the script keeps on around its whole loop (activation
compression, ``save_on_cpu()``) was first lifted off by dsprof's pop (its pack hook ran for 1
step of 20, and the weights came out different), and dsprof's pair, pushed above the script's,
stood in for it in the recorded steps."""

from __future__ import annotations

from tests.integration.helpers import runs_as_without_dsprof, write

COMPRESSED = '''
import hashlib
import sys

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
packed = [0]


def pack(t):  # activation compression: saved activations kept in bf16
    packed[0] += 1
    return t.to(torch.bfloat16), t.dtype


def unpack(saved):
    t, dtype = saved
    return t.to(dtype)


def train(step):
    opt.zero_grad()
    if sys.argv[1] == "per-step":  # a pair pushed and popped inside each step
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            loss = model(torch.randn(16, 32)).pow(2).mean()
    else:
        loss = model(torch.randn(16, 32)).pow(2).mean()
    loss.backward()
    opt.step()


if sys.argv[1] == "whole-loop":
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        for step in range(20):
            train(step)
else:
    for step in range(20):
        train(step)
print("packed", packed[0])
weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
print(hashlib.sha256(weights).hexdigest())
'''


def test_a_scripts_own_saved_tensor_hooks_run_in_every_step(tmp_path):
    script = write(tmp_path / "compressed.py", COMPRESSED)
    for mode in ("whole-loop", "per-step"):
        # WHEN the script keeps its pair on around the loop, or pushes it in each step
        res = runs_as_without_dsprof(script, tmp_path / f"run-{mode}", mode)
        # THEN its pack hook ran for every saved tensor of the 20 steps, and the weights are
        # the plain run's (runs_as_without_dsprof compares the output)
        assert res.stdout.startswith("packed 100\n"), res.stdout
