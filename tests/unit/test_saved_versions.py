"""dsprof's saved-tensor hooks keep autograd's in-place check (collectors/saved_versions.py):
under them a tensor changed in place after autograd saved it raises at backward what autograd
raises without hooks, word for word. Real torch: each case runs without hooks for torch's own
message, then under the hooks."""

from __future__ import annotations

import pytest
import torch

from dsprof.collectors import saved_versions


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x * x
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


def _exp_output():
    y = torch.ones(3, requires_grad=True).exp()
    y.add_(1)
    return y.sum()


def _leaf_input():
    w, z = torch.ones(2, 3, requires_grad=True), torch.ones(2, 3)
    a = w * z
    z.mul_(2)
    return a.sum()


def _second_output():
    u, s, _ = torch.linalg.svd(torch.randn(4, 3, requires_grad=True), full_matrices=False)
    s.mul_(2)
    return u.sum() + s.sum()


def _custom_function():
    y = Square.apply(torch.ones(3, requires_grad=True))
    y.add_(1)
    return y.sum()


def _scalar():
    y = torch.tensor(2.0, requires_grad=True).sigmoid()
    y.mul_(2)
    return y


def _message(build, anomaly: bool, hooked: bool) -> str:
    with torch.autograd.set_detect_anomaly(anomaly):
        if hooked:
            with torch.autograd.graph.saved_tensors_hooks(saved_versions.pack,
                                                          saved_versions.unpack):
                loss = build()
        else:
            loss = build()
        with pytest.raises(RuntimeError) as err:
            loss.backward()
    return str(err.value)


@pytest.mark.filterwarnings("ignore")  # anomaly mode warns with the forward's traceback
@pytest.mark.parametrize("anomaly", [False, True])
@pytest.mark.parametrize("build", [_exp_output, _leaf_input, _second_output, _custom_function,
                                   _scalar])
def test_a_saved_tensor_changed_in_place_raises_autograds_own_error(build, anomaly):
    torch.manual_seed(0)
    plain = _message(build, anomaly, hooked=False)
    torch.manual_seed(0)
    assert _message(build, anomaly, hooked=True) == plain


def test_an_unchanged_tensor_comes_back_and_a_tensor_without_a_version_is_not_checked():
    x = torch.ones(3, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(saved_versions.pack, saved_versions.unpack):
        y = x.exp()
    y.sum().backward()
    assert torch.allclose(x.grad, torch.ones(3).exp())
    assert saved_versions.unpack("not packed here") == "not packed here"
