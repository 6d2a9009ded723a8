"""DS_GRADIENT_CHECKPOINTING and DS_BATCH_SIZE: real torch on CPU, no script change."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dsprof.apply import from_env
from dsprof.apply.batch_size import BatchSizeKnob
from dsprof.apply.checkpointing import GradientCheckpointingKnob, checkpoint_modules
from dsprof.errors import ConfigError


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 64), nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(3))
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def _saved_bytes_and_grads(model: nn.Module, x: torch.Tensor) -> tuple[int, list[torch.Tensor]]:
    """Bytes autograd saves during the forward (outside any checkpoint) and the gradients."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).square().sum()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return saved, grads


def _run_with_knob(knob, model: nn.Module, x: torch.Tensor):
    knob.install()
    try:
        return _saved_bytes_and_grads(model, x)
    finally:
        knob.uninstall()


def test_checkpointing_named_modules_keeps_gradients_and_saves_less():
    # GIVEN a model and the same model with its blocks named in the knob
    torch.manual_seed(0)
    plain, x = Net(), torch.randn(32, 16)
    saved_plain, grads_plain = _saved_bytes_and_grads(plain, x)
    knob = GradientCheckpointingKnob("Net.blocks.*", "cpu")
    # WHEN it runs under the knob
    saved_ckpt, grads_ckpt = _run_with_knob(knob, plain, x)
    # THEN the three blocks (not their children) are wrapped, the gradients are unchanged and
    # the forward keeps far less for backward
    assert knob.report() == {"checkpointed": ["Net.blocks.0", "Net.blocks.1", "Net.blocks.2"]}
    for a, b in zip(grads_plain, grads_ckpt, strict=True):
        torch.testing.assert_close(a, b)
    assert saved_ckpt < saved_plain / 2


def test_checkpointing_one_means_each_repeated_block():
    knob = GradientCheckpointingKnob("1", "cpu")
    _run_with_knob(knob, Net(), torch.randn(4, 16))
    assert knob.report()["checkpointed"] == ["Net.blocks.0", "Net.blocks.1", "Net.blocks.2"]


def test_checkpointing_never_wraps_a_child_of_a_wrapped_module():
    knob = GradientCheckpointingKnob("Net.blocks.1,Net.blocks.1.fc1", "cpu")
    _run_with_knob(knob, Net(), torch.randn(4, 16))
    assert knob.report()["checkpointed"] == ["Net.blocks.1"]


def test_checkpointing_is_off_without_grad():
    model = Net()
    checkpoint_modules(model, ["Net.blocks.*"])
    with torch.no_grad():
        out = model(torch.randn(4, 16))
    assert out.shape == (4, 2) and out.grad_fn is None


def test_checkpoint_modules_in_user_code():
    torch.manual_seed(1)
    model, x = Net(), torch.randn(8, 16)
    before, _ = _saved_bytes_and_grads(model, x)
    assert checkpoint_modules(model, ["Net.blocks.0", "Net.blocks.2"]) == \
        ["Net.blocks.0", "Net.blocks.2"]
    after, _ = _saved_bytes_and_grads(model, x)
    assert after < before


@pytest.mark.parametrize("value", ["", " , ", "0x", "-3"])
def test_bad_values_are_config_errors(value):
    with pytest.raises(ConfigError):
        if value.strip(" ,"):
            BatchSizeKnob(value, "cpu")
        else:
            GradientCheckpointingKnob(value, "cpu")


def test_batch_size_knob_changes_dataloaders_and_restores():
    data = TensorDataset(torch.arange(40.0).reshape(20, 2))
    knob = from_env({"DS_BATCH_SIZE": "7"}, "cpu")[0]
    knob.install()
    try:
        positional = DataLoader(data, 4)
        keyword = DataLoader(data, batch_size=4, drop_last=True)
        default = DataLoader(data)
        sampler = DataLoader(data, batch_sampler=[[0, 1], [2, 3, 4]])
    finally:
        knob.uninstall()
    assert [len(b[0]) for b in positional] == [7, 7, 6]
    assert [len(b[0]) for b in keyword] == [7, 7]
    assert len(next(iter(default))[0]) == 7
    assert [len(b[0]) for b in sampler] == [2, 3]  # a batch_sampler keeps its batches
    assert knob.report() == {"batch_size": 7, "replaced": [4, 4, 1]}
    assert len(next(iter(DataLoader(data, batch_size=4)))[0]) == 4  # uninstalled
