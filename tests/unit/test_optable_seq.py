"""An autograd node's backward belongs to the forward op that created it, not to the ops before
it that created none and recorded the same sequence number (metrics/ops/optable.py)."""

from __future__ import annotations

import torch

from dsprof.analyzers.registry import Context
from dsprof.ingest.importer import import_traces
from dsprof.metrics.ops.optable import OpTable
from dsprof.run import load


def _trace(tmp_path):
    # the HF Trainer counts the label tokens (labels.ne(-100).sum()) right before the loss:
    # under grad mode both ops record the sequence number the next node will take
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 64)
    x = torch.randn(256, 64)
    labels = torch.randint(-100, 8, (256,))
    with torch.profiler.profile(record_shapes=True) as prof:
        for _ in range(2):
            n = labels.ne(-100).sum()
            y = torch.tanh(lin(x))
            (y.square().sum() / n).backward()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    return path


def test_ops_that_create_no_autograd_node_get_no_backward_time(tmp_path):
    # GIVEN a real trace where ne/sum on integer labels precede a differentiable op
    run_dir, _ = import_traces([_trace(tmp_path)], tmp_path / "run")
    with load(run_dir.path) as run:
        table = OpTable(Context(run))
        ops = [op for seq in table.sequences for op in seq]
        # WHEN backward time is looked up for each forward op
        ne = [op for op in ops if op.name == "aten::ne"]
        tanh = [op for op in ops if op.name == "aten::tanh"]
        assert ne and tanh
        # THEN ne (and the integer sum) own no node: no backward time is theirs
        assert table.backward_time(ne) == 0.0 and table.backward_ops(ne) == []
        # AND tanh, which created TanhBackward0, keeps its backward
        assert table.backward_time(tanh) > 0
        assert any(b.name == "aten::tanh_backward" for b in table.backward_ops(tanh))
