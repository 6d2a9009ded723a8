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


def _per_sample_grads(net: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """torch.func's per-sample gradients: grad under vmap, which refuses saved-tensor hooks."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p, xi):
        return functional_call(net, p, (xi.unsqueeze(0),)).sum()

    return vmap(grad(loss), in_dims=(None, 0))(params, x)


def test_torch_func_transforms_run_under_the_tracker_as_without_it():
    # GIVEN the tracker's saved-tensor hooks on, as in a profiler window
    torch.manual_seed(0)
    net, x = Net(), torch.randn(4, 16)
    expected = _per_sample_grads(net, x)
    tracker = ActivationTracker(lambda: 0)
    tracker.install(1, set())
    try:
        # WHEN the script runs torch.func.grad under vmap (it raised RuntimeError before)
        got = _per_sample_grads(net, x)
        # THEN it computes what it computes without dsprof, and the tracker's hooks are
        # back on top of the stack for the rest of the window: an ordinary backward is seen
        top = torch._C._autograd._top_saved_tensors_default_hooks(False)
        assert top is not None and top[0] == tracker._pack
        net(x).sum().backward()
    finally:
        tracker.uninstall()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert "Net.gate" in charged(tracker)
    # AND torch's own function is back once the tracker is off
    from torch.autograd import graph
    assert not getattr(graph.disable_saved_tensors_hooks, "_dsprof_aside", False)


def test_a_scripts_own_saved_tensor_hooks_still_stop_torch_func_as_without_dsprof():
    # GIVEN the tracker on, and the script's own hook pair pushed above it
    net, x = Net(), torch.randn(2, 16)
    tracker = ActivationTracker(lambda: 0)
    tracker.install(1, set())
    try:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            # THEN torch.func refuses, with torch's own message, as it does without dsprof
            try:
                _per_sample_grads(net, x)
            except RuntimeError as exc:
                assert "don't yet support saved tensor hooks" in str(exc)
            else:
                raise AssertionError("torch.func ran under the script's own hooks")
    finally:
        tracker.uninstall()


def test_a_window_that_closes_inside_a_torch_func_transform_leaves_no_hooks_behind():
    # GIVEN the tracker on, and a step that ends (closing the window) inside torch.func.grad,
    # as an inference-style step source does when the model runs inside the transform
    from torch.func import grad

    tracker = ActivationTracker(lambda: 0)
    tracker.install(1, set())

    def loss(w):
        tracker.uninstall()  # the window closes here, the tracker's pair held aside
        tracker.install(2, set())  # and the next opens: no hooks can be pushed inside
        return (w * w).sum()

    try:
        g = grad(loss)(torch.ones(3))
    finally:
        tracker.uninstall()
    # THEN the transform computed its gradient, no pair is left on the stack, torch's own
    # function is back, and a later transform runs as without dsprof
    assert torch.equal(g, torch.full((3,), 2.0))
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    from torch.autograd import graph
    assert not getattr(graph.disable_saved_tensors_hooks, "_dsprof_aside", False)
    assert torch.equal(grad(lambda w: (w * w).sum())(torch.ones(2)), torch.full((2,), 2.0))
