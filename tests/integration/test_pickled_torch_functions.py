"""A script that pickles torch's functions by name (a spawn pool's task, a checkpoint of a
callback) pickles them under dsprof too: the functions dsprof wraps carry torch's module and
name, and pickle finds the wrapper there."""

from __future__ import annotations

import pytest

from tests.integration.helpers import runs_as_without_dsprof, write

pytestmark = pytest.mark.slow

PICKLES = """
import pickle
import torch

names = []
for name, fn in [("torch.save", torch.save), ("torch.autograd.backward", torch.autograd.backward),
                 ("torch.autograd.grad", torch.autograd.grad), ("torch.compile", torch.compile),
                 ("Tensor.item", torch.Tensor.item), ("Tensor.tolist", torch.Tensor.tolist),
                 ("Tensor.cpu", torch.Tensor.cpu), ("torch.nonzero", torch.nonzero)]:
    try:
        pickle.loads(pickle.dumps(fn))
        names.append(name + " ok")
    except Exception as exc:
        names.append(f"{name} {type(exc).__name__}")
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
print("; ".join(names))
"""


def test_torch_functions_pickle_by_name_under_dsprof(tmp_path):
    # GIVEN a script that pickles the torch functions dsprof wraps, then trains
    script = write(tmp_path / "pickles.py", PICKLES)
    # WHEN it runs under dsprof THEN it prints what it prints without: every one pickles
    res = runs_as_without_dsprof(script, tmp_path / "run")
    assert res.stdout.count(" ok") == 8, res.stdout
