"""dsprof never draws from the script's random stream: a script that checks where torch's
global generator stands, or saves its state with a checkpoint, finds it where a plain run
leaves it. (The session's own measurements, such as the library GELU's pace, draw from a
generator of their own.)"""

from __future__ import annotations

import pytest

from tests.integration.helpers import runs_as_without_dsprof, write

pytestmark = pytest.mark.slow

UNDRAWN = """
import torch

# a generator seeded as the global one was: equal states mean nothing has drawn from it yet
fresh = torch.Generator().manual_seed(torch.initial_seed())
print("undrawn at start:", torch.equal(fresh.get_state(), torch.get_rng_state()))
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
"""


def test_the_script_finds_the_global_generator_undrawn(tmp_path):
    # GIVEN a script that asks, before it draws anything, whether torch's generator was drawn
    script = write(tmp_path / "undrawn.py", UNDRAWN)
    # WHEN it runs under dsprof THEN it prints what it prints without: nothing drew from it
    res = runs_as_without_dsprof(script, tmp_path / "run")
    assert "undrawn at start: True" in res.stdout, res.stdout
