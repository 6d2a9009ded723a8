"""A copy of a model the module knobs changed (copy.deepcopy: an EMA model, a DQN target
network) runs its own weights, changed the same way (dsprof/apply/changed_forward.py)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dsprof.apply import from_env, install
from tests.unit.test_library_op_knob import HandRMSNorm, Net
from tests.unit.test_module_knob_hook import Generator, Holder


def _zero_(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return saved


def test_a_copy_of_a_checkpointed_model_runs_its_own_weights_still_checkpointed():
    # GIVEN a generator whose blocks the knob checkpointed, and the saving that gives
    torch.manual_seed(0)
    model, x = Generator(), torch.randn(4, 8)
    plain_saved = _saved_bytes(copy.deepcopy(model), x)
    applied = install(from_env({"DS_GRADIENT_CHECKPOINTING": "Generator.blocks.*"}, "cpu"))
    try:
        expected = model(x).detach()
        # WHEN a deep copy is made (an EMA model) and its weights change
        ema = _zero_(copy.deepcopy(model))
        # THEN the copy computes with its own (zero) weights: blocks add fc2(relu(fc1(x)))
        # = 0 to x, so it returns its input, and the original is as it was
        torch.testing.assert_close(ema(x), x)
        torch.testing.assert_close(model(x), expected)
        # AND the copy's blocks are checkpointed too: its forward keeps far less for backward
        assert _saved_bytes(ema, x) < plain_saved / 2
    finally:
        applied.uninstall()


def test_a_copy_of_a_swapped_norm_uses_its_own_weight():
    # GIVEN the hand RMSNorm swapped for rms_norm after its first call
    torch.manual_seed(0)
    model, x = Net(), torch.randn(4, 16)
    applied = install(from_env({"DS_LIBRARY_OP": "Net.norm=rms_norm"}, "cpu"))
    try:
        model(x)
        assert applied.report()["DS_LIBRARY_OP"]["swapped"] == ["Net.norm"]
        # WHEN a copy's norm weight changes
        twin = copy.deepcopy(model)
        with torch.no_grad():
            twin.norm.weight.mul_(3.0)
        # THEN the copy's norm is the library op on the copy's weight (what its own hand
        # forward computes), and the original's keeps the original weight
        torch.testing.assert_close(twin.norm(x), HandRMSNorm.forward(twin.norm, x))
        torch.testing.assert_close(model.norm(x), HandRMSNorm.forward(model.norm, x))
        assert not torch.allclose(twin.norm(x), model.norm(x))
        # AND the copy still runs the library op
        with torch.profiler.profile() as prof:
            twin.norm(x)
        assert "aten::rms_norm" in {e.name for e in prof.events()}
        assert applied.report()["DS_LIBRARY_OP"]["swapped"] == ["Net.norm"]
    finally:
        applied.uninstall()


def test_a_copy_of_a_compiled_module_gets_its_own_compiled_forward():
    # GIVEN DS_COMPILE on a module (never called: torch.compile is lazy, nothing compiles)
    holder = Holder()
    applied = install(from_env({"DS_COMPILE": "Holder.inner"}, "cpu"))
    try:
        holder(torch.randn(1, 4))
        # WHEN the root is deep-copied
        twin = copy.deepcopy(holder)
        # THEN the copy's compiled forward wraps the copy's own forward, not the original's
        assert twin.inner.forward.own.__self__ is twin.inner
        assert holder.inner.forward.own.__self__ is holder.inner
        assert twin.inner.forward.fn is not holder.inner.forward.fn
    finally:
        applied.uninstall()
