"""An error the script catches and prints itself reads as without dsprof: dsprof's wrappers
(a tensor's value read, ``backward()``, the DataLoader, ``torch.save``) pass errors on without
their own frames, so ``traceback.print_exc()`` and ``logger.exception`` print the plain run's
lines."""

from __future__ import annotations

from tests.integration.helpers import runs_as_without_dsprof, write

CAUGHT = '''
import traceback

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Flaky(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise ValueError(f"sample {i} is corrupt")
        return torch.ones(3)


def attempt(what, fn):
    try:
        fn()
    except Exception:
        print(f"--- {what}")
        print(traceback.format_exc())


def twice():
    loss = model(torch.ones(2, 8)).sum()
    loss.backward()
    loss.backward()


def read_all():
    for _ in DataLoader(Flaky(), batch_size=1):
        pass


def exhausted():
    it = iter(DataLoader(Flaky(), batch_size=2))
    next(it)
    next(it)


model = nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(12):
    opt.zero_grad()
    model(torch.randn(4, 8)).pow(2).mean().backward()
    opt.step()
    if step == 8:  # inside dsprof's profiler window
        attempt("item", lambda: torch.ones(3).item())
        attempt("bool", lambda: bool(torch.ones(3)))
        attempt("float of a tensor that requires grad", lambda: float(model.weight))
        attempt("backward twice", twice)
        attempt("dataset", read_all)
        attempt("stop", exhausted)
        attempt("save", lambda: torch.save(model.state_dict(), "/nonexistent/dir/model.pt"))
print("done")
'''


def test_errors_the_script_catches_print_the_plain_runs_traceback(tmp_path):
    # GIVEN a training loop that, in a profiled step, catches errors raised through each of
    # dsprof's wrappers and prints their tracebacks
    script = write(tmp_path / "caught.py", CAUGHT)
    # WHEN it runs plainly and under dsprof
    res = runs_as_without_dsprof(script, tmp_path / "run")
    # THEN it printed the same (runs_as_without_dsprof compares stdout): no dsprof frame
    # (before: "File .../dsprof/collectors/host_sync.py, line 172, in wrapper" in each)
    assert "dsprof" not in res.stdout
    assert res.stdout.count("--- ") == 7 and "Traceback" in res.stdout


INPLACE = '''
import traceback

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(4, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(12):
    opt.zero_grad()
    y = model(torch.randn(2, 4)).sigmoid()
    y.mul_(2)  # the bug: sigmoid saved its output for backward
    try:
        y.sum().backward()
        print(step, "trained on", model.weight.grad.sum().item())
    except RuntimeError:
        print(step, traceback.format_exc())
    opt.step()
'''


def test_an_in_place_change_of_a_saved_tensor_fails_in_the_profiled_steps_too(tmp_path):
    # GIVEN a loop that changes a tensor autograd saved, in place, in every step: autograd
    # refuses its backward, and the script prints the error and goes on
    script = write(tmp_path / "inplace.py", INPLACE)
    res = runs_as_without_dsprof(script, tmp_path / "run")
    # THEN every step fails as in the plain run, those dsprof records in detail (its
    # saved-tensor hooks are on there, and hooks turn autograd's check off) included: before,
    # steps 0 and 7-9 "trained on" with the wrong gradients
    assert "trained on" not in res.stdout
    assert res.stdout.count("modified by an inplace operation") == 12
