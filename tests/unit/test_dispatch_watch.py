"""The live DEBUG trace and the NaN/Inf check (collectors/dispatch_watch.py), on real torch."""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time

import orjson
import pytest
import torch
from torch import nn

from dsprof.collectors.dispatch_watch import DispatchWatcher
from dsprof.collectors.trace_filter import TraceFilter
from dsprof.errors import NumericalAnomalyError
from dsprof.frames import shown_path
from dsprof.log import logger


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x, poison=False):
        y = self.fc(x)
        if poison:
            y = y / torch.zeros_like(y)  # the first Inf
        return y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 8)
        self.head = Head()

    def forward(self, x, poison=False):
        return self.head(torch.relu(self.body(x)), poison)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def debug_lines():
    handler = Lines()
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old)


def watcher(tmp_path, *, trace=True, check=True, flt="", alloc=1 << 20) -> DispatchWatcher:
    return DispatchWatcher(trace=trace, check=check, trace_filter=TraceFilter.parse(flt),
                           alloc_bytes=alloc, raw_dir=tmp_path, rank=0, now_ns=time.time_ns)


def train_step(model, opt, poison=False):
    loss = model(torch.randn(4, 8), poison).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_trace_logs_ops_with_module_phase_and_step(tmp_path, debug_lines):
    # GIVEN a model trained for two steps under the watcher
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = watcher(tmp_path)
    w.start()
    try:
        train_step(model, opt)
        w.on_step(0)
        train_step(model, opt)
    finally:
        w.stop()
    ops = [line for line in debug_lines if line.startswith("op ")]
    # THEN forward ops name their module, backward ops the module they are for, the
    # optimizer's ops its phase, and each line its step, inputs and duration
    fwd = next(line for line in ops if "aten.addmm.default" in line and "Net.head.fc" in line)
    assert "phase=forward" in fwd and "step=0" in fwd and "float32[4,8]" in fwd
    assert " cpu " in fwd and "dur=" in fwd
    assert any("aten.mm.default" in line and "module=Net.body" in line
               and "phase=backward" in line for line in ops)
    assert any("phase=optimizer" in line for line in ops)
    assert any("step=1" in line for line in ops)
    assert "step 1 begins" in debug_lines
    # AND nothing is traced once the watcher stopped
    n = len(debug_lines)
    model(torch.randn(2, 8))
    assert len(debug_lines) == n


def test_filter_selects_ops_modules_and_steps(tmp_path, debug_lines):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = watcher(tmp_path, flt="op:addmm module:head step:1")
    w.start()
    try:
        train_step(model, opt)
        w.on_step(0)
        train_step(model, opt)
    finally:
        w.stop()
    ops = [line for line in debug_lines if line.startswith("op ")]
    assert ops, "the selected op was not traced"
    assert all("aten.addmm" in line and "Net.head" in line and "step=1" in line for line in ops)


def test_large_new_outputs_get_an_alloc_line(tmp_path, debug_lines):
    a = torch.randn(512, 512)
    w = watcher(tmp_path, alloc=512 * 512 * 4)
    w.start()
    try:
        a @ a          # new 1 MiB output
        a.add_(1)      # in place: no new storage
    finally:
        w.stop()
    allocs = [line for line in debug_lines if line.startswith("alloc ")]
    assert len(allocs) == 1
    assert "1.00 MiB float32[512,512]" in allocs[0] and "aten.mm.default" in allocs[0]


def test_collectives_are_marked(tmp_path, debug_lines):
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        w = watcher(tmp_path)
        w.start()
        try:
            dist.all_reduce(torch.ones(16))
        finally:
            w.stop()
    finally:
        dist.destroy_process_group()
    assert any(line.startswith("collective c10d.allreduce_") and "float32[16]" in line
               for line in debug_lines)


def test_first_nonfinite_forward_output_stops_with_its_origin(tmp_path):
    # GIVEN a model whose head divides by zero in step 3
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = watcher(tmp_path, trace=False)
    w.start()
    try:
        for step in range(3):
            train_step(model, opt)
            w.on_step(step)
        # WHEN the poisoned step runs, THEN it stops at the division
        with pytest.raises(NumericalAnomalyError, match="aten.div.Tensor"):
            train_step(model, opt, poison=True)
    finally:
        w.stop()
    rec = orjson.loads((tmp_path / "anomaly.json").read_bytes())
    assert (rec["op"], rec["module"], rec["phase"], rec["step"]) == (
        "aten.div.Tensor", "Net.head", "forward", 3)
    assert rec["kind"] == "inf" and rec["output"]["inf"] == 16
    # shown as reports show paths: relative below the working directory (frames.shown_path)
    assert rec["site"] == f"{shown_path(__file__)}:{Head.forward.__code__.co_firstlineno + 3}"
    assert "torch.zeros_like" in rec["frames"][0]["code"]
    # input statistics: the denominator is all zeros, the numerator finite
    assert rec["inputs"][1]["min"] == rec["inputs"][1]["max"] == 0.0
    assert rec["inputs"][0]["nan"] == 0 and rec["inputs"][0]["inf"] == 0


def test_backward_anomaly_names_the_autograd_node_and_backward_line(tmp_path):
    x = torch.zeros(3, requires_grad=True)
    w = watcher(tmp_path, trace=False)
    w.start()
    try:
        loss = x.sqrt().sum()  # finite forward; d sqrt(x)/dx at 0 is Inf
        line = inspect.currentframe().f_lineno + 2
        with pytest.raises(NumericalAnomalyError):
            loss.backward()
    finally:
        w.stop()
    rec = orjson.loads((tmp_path / "anomaly.json").read_bytes())
    assert rec["phase"] == "backward" and rec["autograd_node"] == "SqrtBackward0"
    assert rec["frames"][0]["code"].startswith("loss.backward()")
    assert rec["site"].endswith(f":{line}")


def test_check_skips_views_and_ignores_finite_overflowing_sums(tmp_path):
    big = torch.full((4,), 3e38)  # finite, but its float32 sum overflows
    w = watcher(tmp_path, trace=False)
    w.start()
    try:
        (big * 1.0).view(2, 2)
    finally:
        w.stop()
    assert not (tmp_path / "anomaly.json").exists()


def test_uninitialized_outputs_are_not_checked(tmp_path, monkeypatch):
    # torch.empty returns whatever the memory held, NaN bit patterns included (a freed block
    # of NaN is often handed out again), so its output must not be judged
    w = watcher(tmp_path, trace=False)
    checked: list[str] = []
    monkeypatch.setattr(w, "check_outputs", lambda func, *a: checked.append(func._opname))
    w.start()
    try:
        torch.empty(64).fill_(1.0)
        torch.empty_like(torch.zeros(4)).view(2, 2)
    finally:
        w.stop()
    assert checked == ["fill_", "zeros"]


def test_intentional_inf_masks_pass_but_a_fully_masked_softmax_row_stops(tmp_path):
    scores = torch.randn(2, 4, 4)
    causal = torch.ones(4, 4, dtype=torch.bool).triu(1)
    w = watcher(tmp_path, trace=False)
    w.start()
    try:
        # -inf written on purpose and carried through softmax: no anomaly
        masked = scores.masked_fill(causal, float("-inf"))
        (masked + 1.0).softmax(-1)
        # a row with every position masked: softmax makes NaN
        with pytest.raises(NumericalAnomalyError, match="softmax"):
            scores.masked_fill(torch.ones_like(causal), float("-inf")).softmax(-1)
    finally:
        w.stop()
    assert orjson.loads((tmp_path / "anomaly.json").read_bytes())["kind"] == "nan"
