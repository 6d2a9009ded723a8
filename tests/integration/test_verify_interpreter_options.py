"""``dsprof verify`` reruns a run made as ``python -W ... -X ... -B -m dsprof run`` under the
same interpreter options: the rerun's script is the same program (meta.json
``interpreter_options``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.helpers import REPO, dsprof, meta, write

pytestmark = pytest.mark.slow

SEES_ITS_OPTIONS = """
import sys

with open("seen.txt", "a") as f:
    f.write(f"{sys.warnoptions} utf8={sys.flags.utf8_mode} B={sys.dont_write_bytecode}\\n")
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(16):
    loss = model(torch.randn(16, 32)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
print("done")
"""
OPTIONS = ["-W", "error::ResourceWarning", "-X", "utf8", "-B"]


def test_verify_reruns_the_script_under_the_runs_interpreter_options(tmp_path):
    # GIVEN a run made as `python -W error::ResourceWarning -X utf8 -B -m dsprof run`, whose
    # script writes down the options it sees, with a fused-optimizer finding to verify
    script = write(tmp_path / "train.py", SEES_ITS_OPTIONS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    proc = subprocess.run([sys.executable, *OPTIONS, "-m", "dsprof", "run", "-q", "-o", "run",
                           "--wait", "1", "--warmup", "1", "--active", "2", str(script)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert meta(tmp_path / "run")["interpreter_options"] == OPTIONS
    found = json.loads((tmp_path / "run" / "findings.json").read_text())["findings"]
    fused = next(f["id"] for f in found if f["kind"] == "fusion.optimizer")
    # WHEN it is verified from a shell with no such options
    res = dsprof("verify", str(tmp_path / "run"), fused, "-o", str(tmp_path / "v"),
                 timeout=400)
    assert res.code == 0, res.stderr
    # THEN the rerun's script saw what the run's did
    seen = (tmp_path / "seen.txt").read_text().splitlines()
    assert seen == ["['error::ResourceWarning'] utf8=1 B=True"] * 2, seen


RANK_SEES_ITS_OPTIONS = """
import os, sys

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
with open(f"seen{dist.get_rank()}.txt", "w") as f:
    f.write(f"{sys.warnoptions} utf8={sys.flags.utf8_mode} B={sys.dont_write_bytecode}\\n")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(6):
    loss = model(torch.randn(4, 8)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
dist.destroy_process_group()
"""


def _under_options(tmp_path, *dsprof_args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    return subprocess.run([sys.executable, *OPTIONS, "-m", "dsprof", *dsprof_args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=240, check=False)


def test_the_ranks_of_nproc_per_node_run_under_its_interpreter_options(tmp_path):
    # GIVEN `python -W error::ResourceWarning -X utf8 -B -m dsprof run --nproc-per-node 2`
    script = write(tmp_path / "ddp.py", RANK_SEES_ITS_OPTIONS)
    proc = _under_options(tmp_path, "run", "--nproc-per-node", "2", "--no-analyze", "-o", "run",
                          "--wait", "1", "--warmup", "1", "--active", "2", str(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # THEN each rank's script saw the options (before, a rank's interpreter had none), and
    # the run keeps them for verify's rerun
    for rank in (0, 1):
        seen = (tmp_path / f"seen{rank}.txt").read_text()
        assert seen == "['error::ResourceWarning'] utf8=1 B=True\n", seen
    assert meta(tmp_path / "run")["interpreter_options"] == OPTIONS


def test_tunes_probes_run_under_its_interpreter_options(tmp_path):
    # GIVEN `python -W error::ResourceWarning -X utf8 -B -m dsprof tune batch-size`
    script = write(tmp_path / "train.py", SEES_ITS_OPTIONS)
    _under_options(tmp_path, "tune", "batch-size", "--memory-budget", "1GiB", "--probes", "1",
                   "-o", "tuned", str(script))
    # THEN its runs' script saw them (before, a probe's interpreter had none)
    seen = (tmp_path / "seen.txt").read_text().splitlines()
    assert seen and set(seen) == {"['error::ResourceWarning'] utf8=1 B=True"}, seen
