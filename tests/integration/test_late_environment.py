"""A script that sets ``OMP_NUM_THREADS`` in ``os.environ`` before it imports torch gets that
many threads without dsprof; under dsprof torch is loaded first and has read it already. The
run says so, with what it used instead (collectors/late_environment.py), rather than
profiling another program in silence."""

from __future__ import annotations

import pytest

from tests.integration.helpers import dsprof, meta, plain, write

pytestmark = pytest.mark.slow

SETS_THREADS = """
import os
os.environ["OMP_NUM_THREADS"] = "2"
import torch

print("threads", torch.get_num_threads())
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
"""


def test_threads_set_in_the_script_before_torch_loads_are_named_as_not_used(tmp_path):
    # GIVEN a script that asks for 2 threads in os.environ, then imports torch, started with
    # OMP_NUM_THREADS=1 in its environment (as the test helpers start every run)
    script = write(tmp_path / "sets_threads.py", SETS_THREADS)
    assert "threads 2" in plain(script).stdout  # without dsprof, the script's setting holds
    out = tmp_path / "run"
    res = dsprof("run", "-q", "-o", str(out), str(script))
    assert res.code == 0, res.stderr
    # WHEN it runs under dsprof, torch has read the variable already: one thread
    assert "threads 1" in res.stdout
    # THEN the run names the setting and what it used instead: meta, stderr and the summary
    assert meta(out)["late_environment"] == [{"variable": "OMP_NUM_THREADS", "set_to": "2",
                                               "read_as": "1", "used": "1 thread"}]
    said = "the script set OMP_NUM_THREADS=2 after dsprof had loaded torch"
    assert said in res.stderr
    summary = dsprof("summary", str(out), env={"COLUMNS": "250"})
    assert said in " ".join(summary.stdout.split()), summary.stdout
