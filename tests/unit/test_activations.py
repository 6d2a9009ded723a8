"""What each module's forward is charged for saving (dsprof.collectors.activations)."""

from __future__ import annotations

import torch

from dsprof.collectors.activations import ActivationTracker


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.act = torch.nn.ReLU()      # saves its output, which fc2 saves again
        self.fc2 = torch.nn.Linear(32, 32)
        self.gate = torch.nn.Sigmoid()  # saves its output, which nothing saves again

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc2(self.act(self.fc1(x)))) + 1.0


def charged(tracker: ActivationTracker) -> dict[str, int]:
    out: dict[str, int] = {}
    for _step, _d, _p, nbytes, created_in, *_ in tracker.saved:
        out[created_in] = out.get(created_in, 0) + nbytes
    return out


def test_activations_go_to_the_module_whose_checkpointing_would_free_them():
    # GIVEN a model whose input is 8x16 floats
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(8, 16)
    tracker = ActivationTracker(lambda: 0)
    keys = {(str(p.device), p.untyped_storage().data_ptr()) for p in net.parameters()}
    # WHEN one forward runs with the tracker on
    tracker.install(1, keys)
    try:
        net(x).sum().backward()
    finally:
        tracker.uninstall()
    out = charged(tracker)
    # THEN the ReLU output (saved by ReLU and by fc2) belongs to Net, the sigmoid's output to
    # the sigmoid, the model input to no module, and the weights are not activations
    row = 8 * 32 * 4
    assert out == {"": 8 * 16 * 4, "Net": row, "Net.gate": row}
    assert tracker.calls == {(1, "Net"): 1, (1, "Net.fc1"): 1, (1, "Net.act"): 1,
                             (1, "Net.fc2"): 1, (1, "Net.gate"): 1}
    assert tracker.inputs and tracker.inputs[0][3] == 8 * 16 * 4
    assert tracker.modules["Net.fc1"] == ("Linear", 1, 16 * 32 + 32, (16 * 32 + 32) * 4)
