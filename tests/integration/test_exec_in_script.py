"""A script that replaces its process with ``os.exec*`` (re-executing itself, a common way to
start over with a clean interpreter): the run is saved first, as at ``os._exit``
(collectors/exit_guard.py)."""

from __future__ import annotations

import pytest

from dsprof.run import load
from tests.integration.helpers import dsprof, meta, plain, write

REEXEC = """
import os
import sys

import torch

if sys.argv[1:] == ["again"]:
    print("second image", os.environ.get("PHASE"), flush=True)
    sys.exit(0)
torch.manual_seed(0)
model = torch.nn.Linear(16, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(20):
    opt.zero_grad()
    model(torch.randn(8, 16)).pow(2).mean().backward()
    opt.step()
print("trained", flush=True)
if sys.argv[1] == "execv":
    os.execv(sys.executable, [sys.executable, sys.argv[0], "again"])
elif sys.argv[1] == "execle":
    os.execle(sys.executable, sys.executable, sys.argv[0], "again", {**os.environ, "PHASE": "e"})
else:
    os.execvp("no-such-program-dsprof", ["no-such-program-dsprof"])  # raises, caught below
"""


@pytest.mark.parametrize("how", ["execv", "execle"])
def test_a_script_that_execs_itself_saves_its_run_first(tmp_path, how):
    # GIVEN a script that trains 20 steps, then execs itself with its own argv
    script = write(tmp_path / "reexec.py", REEXEC)
    out = tmp_path / "run"
    bare = plain(script, how, cwd=tmp_path)
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), how, cwd=tmp_path)
    # THEN the program goes on in the new image as without dsprof (unprofiled there)
    assert res.code == bare.returncode == 0, res.stderr
    assert res.stdout == bare.stdout
    # AND the run was saved before the exec: finished, with every step (before: "running",
    # and the 3 steps of the profiler window it had written)
    m = meta(out)
    assert (m["status"], m["exit_reason"]) == ("finished", "exec")
    assert m["steps_recorded"] == 20
    with load(out) as run:
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 20


def test_an_exec_that_fails_raises_into_the_script_as_without_dsprof(tmp_path):
    # GIVEN an exec of a program that does not exist, after training
    script = write(tmp_path / "reexec.py", REEXEC)
    out = tmp_path / "run"
    bare = plain(script, "missing", cwd=tmp_path)
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), "missing", cwd=tmp_path)
    # THEN the same FileNotFoundError and status
    assert res.code == bare.returncode == 1
    assert "FileNotFoundError" in res.stderr and "FileNotFoundError" in bare.stderr
    # AND the run ends as the script did, not at the exec that never happened
    m = meta(out)
    assert (m["status"], m["exit_status"], m["exit_reason"]) == ("finished", 1, "exception")
