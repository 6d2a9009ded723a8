"""DS_LIBRARY_OP: the pasted library op replaces a hand-written module's forward, for real, only
where it computes the same thing (CPU torch, the profiler as the witness)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dsprof.apply import from_env, install
from dsprof.errors import ConfigError


class TanhGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))
        return 0.5 * x * (1.0 + torch.tanh(inner))


class HandRMSNorm(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.eps = 1e-6
        self.weight = nn.Parameter(torch.rand(width) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class NotAGelu(nn.Module):
    """Looks like a GELU by its ops but scales the result: the swap would change the model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * TanhGELU()(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = HandRMSNorm(16)
        self.up = nn.Linear(16, 32)
        self.act = TanhGELU()
        self.odd = NotAGelu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.odd(self.act(self.up(self.norm(x))))


def _ops(model: nn.Module, x: torch.Tensor) -> set[str]:
    with torch.profiler.profile() as prof:
        model(x).sum().backward()
    return {e.name for e in prof.events()}


def test_the_named_modules_run_the_library_op_after_a_first_call_that_proves_it_equal():
    # GIVEN a net with a hand-written tanh GELU and RMSNorm, and the knob naming both
    torch.manual_seed(0)
    model, x = Net(), torch.randn(8, 16)
    expected = model(x).detach()
    applied = install(from_env(
        {"DS_LIBRARY_OP": "Net.act=gelu_tanh,Net.norm=rms_norm,Net.odd=gelu_tanh"}, "cpu"))
    try:
        # WHEN the model runs: the first call checks (and returns the module's own result)
        first = model(x)
        assert torch.equal(first.detach(), expected)
        ops = _ops(model, x)
        # THEN later calls run aten::gelu and rms_norm in place of the hand-written ops
        assert "aten::gelu" in ops and "aten::gelu_backward" in ops
        # (on CPU aten::rms_norm is composite: its own pow/mean/rsqrt run under it)
        assert "aten::rms_norm" in ops
        # the module whose result differs kept its forward (its tanh still runs), and says why
        assert "aten::tanh" in ops
        report = applied.report()["DS_LIBRARY_OP"]
        assert sorted(report["swapped"]) == ["Net.act", "Net.norm"]
        assert "does not compute" in report["kept"]["Net.odd"]
        # AND the model's output is the same within float tolerance, gradients included
        torch.testing.assert_close(model(x).detach(), expected, rtol=1e-4, atol=1e-5)
    finally:
        applied.uninstall()


def test_a_module_with_two_inputs_keeps_its_forward():
    class Add(nn.Module):
        def forward(self, a, b):
            return torch.tanh(a + b)

    class Root(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.add = Add()

        def forward(self, x):
            return self.add(x, x)

    model = Root()
    applied = install(from_env({"DS_LIBRARY_OP": "Root.add=gelu"}, "cpu"))
    try:
        model(torch.randn(3))
        model(torch.randn(3))
        assert applied.report()["DS_LIBRARY_OP"]["kept"] == {
            "Root.add": "its forward takes more than one tensor"}
    finally:
        applied.uninstall()


@pytest.mark.parametrize("value", ["Net.act", "Net.act=relu", "=gelu", " , "])
def test_bad_values_name_the_variable_and_the_ops(value):
    with pytest.raises(ConfigError, match="DS_LIBRARY_OP=.*<module path>=<op>"):
        from_env({"DS_LIBRARY_OP": value}, "cpu")


def test_verify_says_where_the_knob_left_the_program_as_it_was():
    from io import StringIO
    from pathlib import Path

    from rich.console import Console

    from dsprof.render.verification import render_verification
    from dsprof.reports.verification import Verification, knobs_not_applied

    # GIVEN a rerun whose DS_LIBRARY_OP swapped one module and kept another
    meta = {"knobs": {"DS_LIBRARY_OP": {"value": "Net.act=gelu,Net.odd=gelu",
                                        "swapped": ["Net.act"],
                                        "kept": {"Net.odd": "gelu does not compute what its "
                                                            "forward computes"}}}}
    lines = knobs_not_applied(meta)
    assert lines == [("DS_LIBRARY_OP: Net.odd kept its own forward (gelu does not compute "
                      "what its forward computes)")]
    # THEN verify's output says so, next to the numbers
    v = Verification(Path("a"), Path("b"), [], 0.1, 0.09, 0.095, (10, 10), None, None, None,
                     0.001, 0.001, lines)
    out = StringIO()
    render_verification(v, Console(file=out, width=200))
    assert "not applied: DS_LIBRARY_OP: Net.odd kept its own forward" in out.getvalue()
    assert "measures less than the fix" in out.getvalue()
    assert knobs_not_applied({"knobs": {"DS_COMPILE": {"compiled": ["Net.act"]}}}) == []


def test_the_module_hook_goes_once_every_named_module_is_found():
    from torch.nn.modules import module as torch_module

    # GIVEN the knob naming two modules by their literal paths
    model, x = Net(), torch.randn(4, 16)
    hooks_before = len(torch_module._global_forward_pre_hooks)
    applied = install(from_env({"DS_LIBRARY_OP": "Net.act=gelu_tanh,Net.norm=rms_norm"}, "cpu"))
    try:
        assert len(torch_module._global_forward_pre_hooks) == hooks_before + 1
        # WHEN the model runs once
        model(x)
        # THEN no global hook is left to slow every module call (the pasted change has none),
        # and the swap still happens on the modules' next calls
        assert len(torch_module._global_forward_pre_hooks) == hooks_before
        assert "aten::gelu" in _ops(model, x)
        assert sorted(applied.report()["DS_LIBRARY_OP"]["swapped"]) == ["Net.act", "Net.norm"]
    finally:
        applied.uninstall()
    # AND a wildcard path lets it go too once it matched: the root's walk saw its whole tree
    applied = install(from_env({"DS_LIBRARY_OP": "Net.*=gelu_tanh"}, "cpu"))
    try:
        model(x)
        assert len(torch_module._global_forward_pre_hooks) == hooks_before
        assert applied.report()["DS_LIBRARY_OP"]["swapped"] == ["Net.act"]
    finally:
        applied.uninstall()
    assert len(torch_module._global_forward_pre_hooks) == hooks_before
