"""A script's ``__main__`` globals under dsprof are the ones ``python script.py`` gives it: a
script that reaches builtins through ``__builtins__`` (a module in ``__main__``, a dict
elsewhere), reads its own source through ``__loader__``, or lists its globals, runs as it
does without dsprof."""

from __future__ import annotations

import pytest

from tests.integration.helpers import runs_as_without_dsprof, write

pytestmark = pytest.mark.slow

MAIN_GLOBALS = """
import torch

print(sorted(globals()))
print({k: type(globals()[k]).__name__ for k in ("__builtins__", "__loader__", "__spec__",
                                                 "__cached__", "__package__", "__doc__")})
__builtins__.print("through __builtins__")
print(len(__loader__.get_source("__main__").splitlines()), "lines of source")
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
"""


def test_the_script_gets_the_globals_python_gives_main(tmp_path):
    # GIVEN a script that prints its globals and uses __builtins__ and __loader__
    script = write(tmp_path / "main_globals.py", MAIN_GLOBALS)
    # WHEN it runs under dsprof THEN it prints what it prints without
    res = runs_as_without_dsprof(script, tmp_path / "run")
    assert "'__builtins__': 'module'" in res.stdout and "through __builtins__" in res.stdout
