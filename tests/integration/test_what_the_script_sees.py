"""What a script can see of its own process is what ``python script.py`` shows it: its
``__main__`` globals, torch's random stream, the settings it makes in ``os.environ``. Each
script here looks at one of them, then trains three steps (so that dsprof has steps to find),
and prints what it saw; under dsprof it must print the same, or dsprof must say why not."""

from __future__ import annotations

import pytest

from tests.integration.helpers import dsprof, meta, plain, runs_as_without_dsprof, write

pytestmark = pytest.mark.slow

TRAINS = """
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
"""

MAIN_GLOBALS = """
import torch

print(sorted(globals()))
print({k: type(globals()[k]).__name__ for k in ("__builtins__", "__loader__", "__spec__",
                                                 "__cached__", "__package__", "__doc__")})
__builtins__.print("through __builtins__")
print(len(__loader__.get_source("__main__").splitlines()), "lines of source")
""" + TRAINS

UNDRAWN = """
import torch

# a generator seeded as the global one was: equal states mean nothing has drawn from it yet
fresh = torch.Generator().manual_seed(torch.initial_seed())
print("undrawn at start:", torch.equal(fresh.get_state(), torch.get_rng_state()))
""" + TRAINS

SETS_THREADS = """
import os
os.environ["OMP_NUM_THREADS"] = "2"
import torch

print("threads", torch.get_num_threads())
""" + TRAINS


def test_the_script_gets_the_globals_python_gives_main(tmp_path):
    # GIVEN a script that prints its globals and uses __builtins__ (a module in __main__, a
    # dict elsewhere) and __loader__
    script = write(tmp_path / "main_globals.py", MAIN_GLOBALS)
    # WHEN it runs under dsprof THEN it prints what it prints without
    res = runs_as_without_dsprof(script, tmp_path / "run")
    assert "'__builtins__': 'module'" in res.stdout and "through __builtins__" in res.stdout


def test_the_script_finds_the_global_generator_undrawn(tmp_path):
    # GIVEN a script that asks, before it draws anything, whether torch's generator was drawn
    # (dsprof's own timings at session start draw from a generator of their own)
    script = write(tmp_path / "undrawn.py", UNDRAWN)
    # WHEN it runs under dsprof THEN it prints what it prints without: nothing drew from it
    res = runs_as_without_dsprof(script, tmp_path / "run")
    assert "undrawn at start: True" in res.stdout, res.stdout


def test_threads_set_in_the_script_before_torch_loads_are_named_as_not_used(tmp_path):
    # GIVEN a script that asks for 2 threads in os.environ, then imports torch, started with
    # OMP_NUM_THREADS=1 in its environment (as the test helpers start every run)
    script = write(tmp_path / "sets_threads.py", SETS_THREADS)
    assert "threads 2" in plain(script).stdout  # without dsprof, the script's setting holds
    out = tmp_path / "run"
    res = dsprof("run", "-q", "-o", str(out), str(script))
    assert res.code == 0, res.stderr
    # WHEN it runs under dsprof, torch has read the variable already: one thread
    # (collectors/late_environment.py: torch is loaded before the script starts)
    assert "threads 1" in res.stdout
    # THEN the run names the setting and what it used instead: meta, stderr and the summary
    assert meta(out)["late_environment"] == [{"variable": "OMP_NUM_THREADS", "set_to": "2",
                                               "read_as": "1", "used": "1 thread"}]
    said = "the script set OMP_NUM_THREADS=2 after dsprof had loaded torch"
    assert said in res.stderr
    summary = dsprof("summary", str(out), env={"COLUMNS": "250"})
    assert said in " ".join(summary.stdout.split()), summary.stdout
