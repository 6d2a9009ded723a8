"""A script whose training runs in a Python child it starts with subprocess (a driver, a sweep):
the child runs as without dsprof, and the run says where the training went and what to type."""

from __future__ import annotations

from dsprof.reports.summary import summarize
from dsprof.run import load
from tests.integration.helpers import dsprof, meta, plain, write

CHILD = """
import sys
import time

import torch

torch.manual_seed(0)
torch.set_num_threads(1)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
start = time.monotonic()
while time.monotonic() - start < float(sys.argv[1]):  # long enough to be a training
    opt.zero_grad()
    ((model(torch.randn(16, 8)) - 1) ** 2).mean().backward()
    opt.step()
print("child trained", sys.argv[1:], flush=True)
sys.exit(3)
"""

DRIVER = """
import subprocess
import sys

done = subprocess.run([sys.executable, "child.py", "2.5", "--tag", "a b"])
print("driver: the child exited", done.returncode)
sys.exit(done.returncode)
"""

TRAINS_ITSELF = """
import subprocess
import sys

import torch

subprocess.run([sys.executable, "-c", "pass"], check=True)
subprocess.run(["git", "--version"], capture_output=True, check=False)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(30):
    opt.zero_grad()
    ((model(torch.randn(16, 8)) - 1) ** 2).mean().backward()
    opt.step()
print("trained")
"""


def test_a_driver_whose_child_trains_names_the_child_and_the_command(tmp_path):
    # GIVEN a driver that runs a training script with subprocess.run and exits with its status
    write(tmp_path / "child.py", CHILD)
    driver = write(tmp_path / "driver.py", DRIVER)
    out = tmp_path / "run"
    # WHEN run plainly and under dsprof
    bare = plain(driver, cwd=tmp_path)
    res = dsprof("run", "-o", str(out), str(driver), cwd=tmp_path)
    # THEN the child's output and exit status pass through unchanged
    assert bare.returncode == res.code == 3, res.stderr
    assert bare.stdout == res.stdout == ("child trained ['2.5', '--tag', 'a b']\n"
                                         "driver: the child exited 3\n")
    # AND the run records the child, its time and status
    (child,) = meta(out)["python_children"]
    assert child["argv"][1:] == ["child.py", "2.5", "--tag", "a b"]
    assert child["exit_status"] == 3 and child["ended"] is True and child["seconds"] >= 2.5
    # AND the summary says the training ran in it, and what to type instead
    with load(out) as run:
        (note,) = [n for n in summarize(run).notes if "child process" in n]
    assert "(python child.py 2.5 --tag 'a b', " in note
    assert note.endswith("profile it with: dsprof run child.py 2.5 --tag 'a b'")
    # (and dsprof run printed it at the end)
    assert "profile it with: dsprof run child.py" in " ".join(res.stderr.split())


def test_a_script_that_trains_itself_and_runs_a_short_child_gets_no_note(tmp_path):
    # GIVEN a script that runs `python -c pass` and git, then trains 30 steps itself
    script = write(tmp_path / "trains.py", TRAINS_ITSELF)
    out = tmp_path / "run"
    bare = plain(script, cwd=tmp_path)
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), cwd=tmp_path)
    assert bare.returncode == res.code == 0, res.stderr
    assert bare.stdout == res.stdout == "trained\n"
    # THEN the Python child is recorded (git is no Python) and no note blames it
    assert [c["argv"][1:] for c in meta(out)["python_children"]] == [["-c", "pass"]]
    with load(out) as run:
        assert not [n for n in summarize(run).notes if "child process" in n]
