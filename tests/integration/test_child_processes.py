"""Processes a script starts with multiprocessing itself (Hogwild training): recorded, so a run
that saw no step says where its training may have gone instead of "no optimizer.step()"."""

from __future__ import annotations

from dsprof.reports.summary import summarize
from dsprof.run import load
from tests.integration.helpers import meta, runs_as_without_dsprof, write

HOGWILD = """
import torch
import torch.multiprocessing as mp
from torch import nn


def train(rank, model, steps):
    torch.manual_seed(rank)
    torch.set_num_threads(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        x, y = torch.randn(16, 8), torch.randn(16, 1)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


if __name__ == "__main__":
    mp.set_start_method("fork")
    model = nn.Linear(8, 1)
    model.share_memory()
    trainers = [mp.Process(target=train, args=(r, model, 50)) for r in range(2)]
    for p in trainers:
        p.start()
    for p in trainers:
        p.join()
    print("exit codes", [p.exitcode for p in trainers])
"""

LOADER = """
import torch
from torch.utils.data import DataLoader, TensorDataset

data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in DataLoader(data, batch_size=8, num_workers=1):
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
print("done")
"""


def test_hogwild_trainers_are_named_when_the_profiled_process_saw_no_step(tmp_path):
    # GIVEN a Hogwild script: two forked trainers on a shared model, the main process waits
    script = write(tmp_path / "hogwild.py", HOGWILD)
    out = tmp_path / "run"
    # WHEN profiled THEN it runs as without dsprof
    runs_as_without_dsprof(script, out)
    # AND the run records the two processes it started, by their target
    assert meta(out)["child_processes"] == [
        {"target": "__main__.train", "start_method": "fork", "count": 2}]
    # AND the summary says where the training may have gone, not "no optimizer.step()"
    with load(out) as run:
        (note,) = [n for n in summarize(run).notes if "no step boundaries" in n]
    assert "2 processes with multiprocessing (2 x __main__.train, start method fork)" in note
    assert "torch.multiprocessing.spawn" in note


def test_dataloader_workers_are_not_the_scripts_processes(tmp_path):
    script = write(tmp_path / "loader.py", LOADER)
    out = tmp_path / "run"
    runs_as_without_dsprof(script, out)
    assert "child_processes" not in meta(out)
