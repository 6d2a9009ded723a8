"""``torch.distributed.checkpoint`` (DCP) saves every N steps: the step records the DCP call
and its whole time (not the ``torch.save`` DCP makes for its non-tensor items), the checkpoint
files are those of a plain run, and ``async_save``'s writer thread adds nothing to the steps."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dsprof.analyzers.registry import Context
from dsprof.analyzers.step_saves import CheckpointSaves, checkpoint_fix, checkpoint_words
from dsprof.run import Run, load
from tests.integration.helpers import dsprof, write
from tests.unit.test_analyzers_synthetic import SCRIPT, steps

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

DCP_LOOP = """
import sys
import warnings
import torch
import torch.distributed.checkpoint as dcp

warnings.simplefilter("ignore")  # DCP warns that torch.distributed is not initialised
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
pending = None
for step in range(1, 21):
    loss = model(torch.randn(32, 64)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 5 == 0:
        sd = {"model": model.state_dict(), "optim": opt.state_dict(), "step": step}
        if sys.argv[1] == "async":
            if pending is not None:
                pending.result()
            pending = dcp.async_save(sd, checkpoint_id=f"ckpt/step_{step}")
        else:
            dcp.save(sd, checkpoint_id=f"ckpt/step_{step}")
        print(f"step {step} saved", flush=True)
if pending is not None:
    pending.result()
"""


def _data_files(root):
    # .metadata holds a fresh save_id each run: the tensors' files are compared
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.distcp"))}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dcp_saves_are_recorded_as_dcp_and_write_the_same_files(tmp_path, mode):
    # GIVEN a plain loop that saves with DCP every 5 steps, run plain and under dsprof
    script = write(tmp_path / "dcp_loop.py", DCP_LOOP)
    plain, profiled = tmp_path / "plain", tmp_path / "profiled"
    plain.mkdir()
    profiled.mkdir()
    ran = subprocess.run([sys.executable, str(script), mode], cwd=plain, capture_output=True,
                         text=True, timeout=120, check=False,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "run"), str(script), mode, cwd=profiled)
    # THEN it runs as without dsprof: status, output and the checkpoints' tensors
    assert ran.returncode == 0, ran.stderr
    assert res.code == 0, res.stderr
    assert res.stdout == ran.stdout
    assert _data_files(profiled / "ckpt") == _data_files(plain / "ckpt") != {}
    # AND the saving steps record the DCP call at the script's line, only on the saving steps
    # (async_save's writer thread, which runs dcp.save after the step, adds none)
    with load(tmp_path / "run") as run:
        rows = run.sql("""SELECT step, save_call, save_site FROM steps
                          WHERE save_ns > 0 ORDER BY step""")
    call = f"torch.distributed.checkpoint.{'async_save' if mode == 'async' else 'save'}"
    assert [r[0] for r in rows] == [5, 10, 15], rows
    assert {r[1] for r in rows} == {call}
    line = 1 + next(i for i, text in enumerate(DCP_LOOP.split("\n"))
                    if f"dcp.{call.rsplit('.', 1)[1]}(sd" in text)
    assert {r[2] for r in rows} == {f"{script}:{line}"}, rows


def test_dcp_saves_are_named_in_the_periodic_finding():
    # GIVEN slow steps at a dcp.save stride
    saves = CheckpointSaves(10, 0, ["train.py:29"], {20: 20.0, 30: 21.0}, {20: 22.0, 30: 23.0},
                            [10, 20, 30], "torch.distributed.checkpoint.save")
    ctx = Context(Run.from_tables(meta=SCRIPT, steps=steps([100, 100])))
    # THEN the words and the fix name DCP's call, never torch.save
    assert "dcp.save at train.py:29" in checkpoint_words(saves)
    fix = checkpoint_fix(ctx, saves)
    assert "dcp.save(...)" in fix and "torch.save" not in fix
    async_fix = checkpoint_fix(ctx, saves._replace(call="torch.distributed.checkpoint.async_save"))
    assert "async_save already" in async_fix
