"""An op that creates no autograd node (its inputs need no gradient: a SimCLR augmentation
before the encoder) carries the sequence number of the next op that does. The fusion
analyzers charged the augmentation's mul -> add -> mul -> clamp with the first conv's
backward (3 ms "in their backward" of a chain that has none, 0.646 ms/step "saved")."""

from __future__ import annotations

from dsprof.analyzers.registry import Context
from dsprof.run import load
from tests.integration.helpers import dsprof, write

SIMCLR_STEP = """
import torch, torch.nn as nn, torch.nn.functional as F

torch.manual_seed(0)
enc = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(), nn.Linear(16, 16))
opt = torch.optim.SGD(enc.parameters(), lr=0.05)
data = torch.rand(128, 3, 32, 32)


def augment(x):
    # brightness jitter on data that needs no gradient: mul -> add -> mul -> clamp
    return (x * (0.6 + 0.8 * torch.rand(x.size(0), 1, 1, 1))).clamp(0, 1)


for step in range(14):
    x = data[torch.randint(0, 128, (32,))]
    z1, z2 = F.normalize(enc(augment(x)), dim=1), F.normalize(enc(augment(x)), dim=1)
    loss = -(z1 * z2).sum(1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
print("done")
"""


def test_ops_on_tensors_without_gradient_have_no_backward(tmp_path):
    # GIVEN a contrastive step whose augmentation runs in grad mode on data with no gradient
    script = write(tmp_path / "simclr_step.py", SIMCLR_STEP)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script))
    assert res.code == 0, res.stderr
    assert res.stdout == "done\n"
    with load(out) as run:
        table = Context(run).op_table
        ops = [op for seq in table.sequences for op in seq]
        clamps = [op for op in ops if op.name == "aten::clamp"]
        convs = [op for op in ops if op.name in ("aten::conv2d", "aten::convolution")]
        assert clamps and convs
        # the augmentation shares its number with the conv that follows it
        assert any((c.rank, c.seq) == (v.rank, v.seq) for c in clamps for v in convs)
        # THEN the augmentation's ops own no backward, and the conv keeps its own
        assert table.backward_time(clamps) == 0
        assert table.backward_ops(clamps) == []
        assert table.backward_time(convs) > 0
