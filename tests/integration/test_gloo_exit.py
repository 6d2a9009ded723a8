"""dsprof holds a script's gloo process groups from its first step (optimizer or, with no
optimizer, backward()) until the process exits (dsprof/collectors/process_groups.py), so the
DDP Reducer's last reference never destroys a group inside the script. Real gloo (world size
1, a file store), the real ``dsprof run``; the script reports what dsprof holds."""

from __future__ import annotations

import pytest

from tests.integration.helpers import dsprof

_SCRIPT = """
import sys
import torch
import torch.distributed as dist
from torch import nn

from dsprof.collectors import process_groups

dist.init_process_group("gloo", rank=0, world_size=1, init_method="file://" + sys.argv[1])
model = nn.parallel.DistributedDataParallel(nn.Linear(8, 8))
opt = torch.optim.SGD(model.parameters(), lr=0.1) if sys.argv[2] == "optimizer" else None
x = torch.randn(4, 8)
for _ in range(3):
    model(x).sum().backward()
    if opt is not None:
        opt.step()
        opt.zero_grad()
    else:  # a hand-written update: no step boundary for the first 64 backwards
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
                p.grad = None
dist.destroy_process_group()
del model, opt
print("held", process_groups.kept())
sys.exit(3)
"""


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["optimizer", "manual"])
def test_the_group_is_held_until_exit_and_the_exit_status_is_the_scripts(tmp_path, loop):
    # GIVEN DDP over gloo that destroys its group and drops its model, then exits with 3
    script = tmp_path / "ddp_exit.py"
    script.write_text(_SCRIPT)
    # WHEN run under dsprof
    res = dsprof("run", "--no-analyze", "-q", "-o", str(tmp_path / "run"), str(script),
                 str(tmp_path / "store"), loop, timeout=300)
    # THEN dsprof held the group past the script's own references, and the script's exit
    # status and output are its own
    assert "held 1" in res.stdout, res.stderr
    assert res.code == 3, res.stderr
