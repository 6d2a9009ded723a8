"""Activation checkpointing re-runs a region's forward inside one backward node: that time is
not the node's backward (metrics/ops/recompute.py). Two real ``dsprof run``s of the same
model, with and without ``torch.utils.checkpoint``: the hand GELU chain's backward time must
stay the chain's own, not grow by the recomputed Linear."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from statistics import median

import pytest

from dsprof.analyzers.registry import Context
from dsprof.metrics.ops.recompute import find_recompute
from dsprof.run import load
from tests.machine_share import recording

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

SCRIPT = textwrap.dedent("""
    import math, sys
    import torch
    from torch import nn
    from torch.utils.checkpoint import checkpoint

    class TanhGELU(nn.Module):
        def forward(self, x):
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                               * (x + 0.044715 * torch.pow(x, 3.0))))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.wide = nn.Linear(512, 2048)
            self.act = TanhGELU()  # last: its backward node is where the recompute runs

        def forward(self, x):
            return self.act(self.wide(x))

    class Net(nn.Module):
        def __init__(self, ckpt):
            super().__init__()
            self.ckpt, self.block, self.head = ckpt, Block(), nn.Linear(2048, 1)

        def forward(self, x):
            h = checkpoint(self.block, x, use_reentrant=False) if self.ckpt else self.block(x)
            return self.head(h)

    torch.manual_seed(0)
    net = Net(sys.argv[1] == "ckpt")
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(32, 512)
    for _ in range(12):
        net(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    print("done")
""")


def _run(tmp_path, mode: str):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"run_{mode}"
    with recording():
        done = subprocess.run([sys.executable, "-m", "dsprof", "run", "--no-analyze", "-o",
                               str(out), str(script), mode], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              check=False)
    assert done.returncode == 0, done.stderr
    return out


def _chain_backward_ms(run) -> list[float]:
    """Per profiled step, the backward time of the GELU chain's ops (Net.block.act)."""
    table = Context(run).op_table
    per_step: dict[int, float] = {}
    for seq in table.sequences:
        for op in seq:
            if op.module == "Net.block.act":
                per_step[op.step] = per_step.get(op.step, 0.0) + table.backward_time([op]) * 1e3
    return sorted(per_step.values())


def test_a_checkpointed_regions_recompute_is_not_charged_to_its_backward_node(tmp_path):
    # GIVEN the same model run plain and with its block checkpointed: the block's 512 x 2048
    # Linear and its GELU chain re-run inside the chain's last backward node
    with load(_run(tmp_path, "plain")) as plain, load(_run(tmp_path, "ckpt")) as ckpt:
        assert find_recompute(plain).outermost == {}
        found = find_recompute(ckpt)
        plain_ms, ckpt_ms = _chain_backward_ms(plain), _chain_backward_ms(ckpt)
        names = {r[0] for node in found.outermost.values() for _, i, _ in node
                 for r in ckpt.sql("SELECT name FROM ops WHERE id = ?", [i])}
    # THEN the re-run is found, as the block's module span, one per profiled step
    assert names == {"Net.block"} and len(found.outermost) == len(ckpt_ms)
    # and the chain's backward is its own: its nodes run 1.5-2x slower after a recompute
    # (measured per op: the re-run left the caches cold), so the median step's stays within
    # 4x of the plain run's, where the recompute charged to it made it about 8x
    recompute_ms = median(found.window_ns.values()) / 1e6
    assert recompute_ms > 4 * median(plain_ms), (recompute_ms, plain_ms)
    assert median(ckpt_ms) < 4 * median(plain_ms), (ckpt_ms, plain_ms)


def test_a_script_that_checkpoints_is_told_it_is_on_not_advised_again(tmp_path):
    # GIVEN the same model with its block checkpointed, and without
    from dsprof.analyzers.registry import analyze

    skipped = {}
    for mode in ("ckpt", "plain"):
        with load(_run(tmp_path, mode)) as run:
            res = analyze(run, write=False, only=("checkpointing",))
            assert not [f for f in res.findings if f.kind == "memory.checkpointing"
                        and f.saving_bytes] or mode == "plain"
            skipped[mode] = {s["analyzer"]: s["reason"] for s in res.skipped}
    # THEN the checkpointed run's memory advice says checkpointing is on, for that block
    reason = skipped["ckpt"].get("checkpointing", "")
    assert reason.startswith("activation checkpointing is on: the forwards of Net.block re-run")
    # AND the plain run is not told so
    assert "is on" not in skipped["plain"].get("checkpointing", "")
