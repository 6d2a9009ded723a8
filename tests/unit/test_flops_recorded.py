"""FLOPs of what torch 2.13 really records on CPU, end to end through ingest, against
FlopCounterMode on the same forward + backward.

Each case is profiled with ``record_shapes=True`` (so each op carries its own argument order:
``aten::mkldnn_convolution`` records padding before stride), the trace is imported like a
user's trace, and the ``ops`` table's FLOPs (each counted once: an outer ``aten::convolution``
and its inner ``mkldnn_convolution`` are one conv) must equal the reference exactly.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from dsprof.ingest.importer import import_traces
from dsprof.reports.summary import summarize
from dsprof.run import load
from tests.corpus.reference import reference_flops


def _conv(module: nn.Module, *shape: int, grad_input: bool = False):
    x = torch.randn(*shape, requires_grad=grad_input)
    return lambda: module(x).sum().backward()


def _mha():
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    x = torch.randn(2, 8, 16)
    return lambda: mha(x, x, x)[0].sum().backward()


def _sdpa(causal: bool):
    q, k, v = (torch.randn(2, 2, 8, 16, requires_grad=True) for _ in range(3))
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal).sum().backward()


def _rnn(module: nn.Module, *shape: int):
    x = torch.randn(*shape)
    return lambda: module(x)[0].sum().backward()


def _einsum():
    a, b = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 4, 5, requires_grad=True)
    return lambda: torch.einsum("bij,bjk->bik", a, b).sum().backward()


def _baddbmm():
    c = torch.randn(2, 3, 5)
    a, b = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 4, 5, requires_grad=True)
    return lambda: torch.baddbmm(c, a, b).sum().backward()


def _bf16_conv():
    conv = nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 9, 9)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        y.float().sum().backward()
    return step


torch.manual_seed(0)
CASES = {
    # the crash: padding 1 read as stride 1... and stride 1 read as padding
    "conv1d_pad1": lambda: _conv(nn.Conv1d(8, 96, 3, padding=1), 2, 8, 16),
    "conv1d_strided": lambda: _conv(nn.Conv1d(4, 8, 5, stride=3, padding=2), 2, 4, 31,
                                    grad_input=True),
    "conv2d_strided_dilated_grouped": lambda: _conv(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=2, groups=2), 2, 4, 9, 9),
    "conv2d_depthwise": lambda: _conv(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                                      2, 8, 9, 9, grad_input=True),
    "conv2d_same": lambda: _conv(nn.Conv2d(4, 8, 3, padding="same"), 2, 4, 9, 9),
    "conv2d_pad0_stride2": lambda: _conv(nn.Conv2d(3, 8, 4, stride=2), 2, 3, 12, 12),
    "conv3d_strided": lambda: _conv(nn.Conv3d(2, 4, 3, padding=1, stride=(1, 2, 2)),
                                    1, 2, 5, 6, 6),
    "conv_transpose2d": lambda: _conv(nn.ConvTranspose2d(8, 4, 2, stride=2), 2, 8, 5, 5,
                                      grad_input=True),
    "conv_transpose2d_grouped": lambda: _conv(
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
        2, 8, 5, 5),
    "conv_transpose1d": lambda: _conv(nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1), 2, 8, 5),
    "bf16_autocast_conv": _bf16_conv,
    "lstm_2_layers": lambda: _rnn(nn.LSTM(8, 16, num_layers=2, batch_first=True), 2, 5, 8),
    "gru": lambda: _rnn(nn.GRU(8, 16), 5, 2, 8),
    "einsum": _einsum,
    "baddbmm": _baddbmm,
    "sdpa": lambda: _sdpa(False),
    "sdpa_causal": lambda: _sdpa(True),
    "multihead_attention": _mha,
    "linear_3d": lambda: _conv(nn.Linear(16, 24), 3, 5, 16, grad_input=True),
}


def _record(fn, path: Path) -> None:
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    prof.export_chrome_trace(str(path))


@pytest.mark.parametrize("case", sorted(CASES))
def test_recorded_flops_equal_flop_counter(case, tmp_path):
    # GIVEN one forward + backward recorded by torch.profiler, and FlopCounterMode on the same
    step = CASES[case]()
    expected = reference_flops(step)
    assert expected > 0
    _record(step, tmp_path / "trace.json")

    # WHEN the trace is ingested
    run_dir, _ = import_traces([tmp_path / "trace.json"], tmp_path / "run")

    # THEN its ops add up to the reference, with nothing left unknown
    with load(run_dir.path) as run:
        got = run.sql("SELECT sum(flops) FROM ops")[0][0]
        assert got == expected, run.sql("SELECT name, flops FROM ops WHERE flops IS NOT NULL")
        assert not run.meta["ingest_notes"]


def _with_broken_conv(src: Path, dst: Path) -> int:
    """Rewrite every mkldnn_convolution's and convolution's arguments into layouts no formula
    knows (a zero stride, text where a shape belongs); returns how many were broken."""
    doc = json.loads(src.read_text())
    broken = 0
    for event in doc["traceEvents"]:
        name = event.get("name", "")
        if name in ("aten::mkldnn_convolution", "aten::convolution", "aten::_convolution"):
            args = event["args"]
            args["Concrete Inputs"] = ["", "", "", "[0, 0]", "[0, 0]", "[0, 0]", "x"]
            broken += 1
        elif name == "aten::convolution_backward":
            event["args"]["Input Dims"] = "not a list"
            broken += 1
    dst.write_bytes(gzip.compress(orjson.dumps(doc)))
    return broken


def test_an_op_whose_flops_fail_is_null_counted_and_shown(tmp_path):
    # GIVEN a real trace whose conv ops carry arguments no formula can use
    _record(CASES["conv2d_strided_dilated_grouped"](), tmp_path / "trace.json")
    assert _with_broken_conv(tmp_path / "trace.json", tmp_path / "broken.json.gz") >= 3

    # WHEN it is ingested
    run_dir, _ = import_traces([tmp_path / "broken.json.gz"], tmp_path / "run")

    # THEN the ingest succeeds, the convs have no FLOPs, and meta.json and the summary say so
    with load(run_dir.path) as run:
        assert run.sql("SELECT count(*) FROM ops WHERE name = 'aten::convolution'")[0][0] == 1
        assert run.sql("SELECT sum(flops) FROM ops")[0][0] is None
        unknown = run.meta["ingest_notes"]["flops_unknown"]
        # the outer convolution (its inner convs failed too) and the backward: 2 ops, 2 kinds
        assert unknown == {"ops": 2, "kinds": {"aten::convolution": 1,
                                               "aten::convolution_backward": 1}}
        notes = summarize(run).notes
    assert any(n.startswith("FLOPs unknown for 2 ops of 2 kinds") for n in notes), notes
