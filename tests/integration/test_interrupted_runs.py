"""A script that Ctrl-C ends (an unhandled KeyboardInterrupt) ends dsprof's process as it ends
the plain interpreter's, the run saved. Plain python marks a KeyboardInterrupt leaving the
script's top level and kills itself with SIGINT after finalisation (-2; bash shows 130), unless
finalisation clears the mark: torch._dynamo's atexit handler does (the optimizer loads it), and
plain python exits 1. dsprof exited 130 either way, an ordinary exit. The tests compare with
plain python's status on the same script, whatever CPython does (measured, CPython 3.11, torch
2.13: -2 without an optimizer, 1 with one). dsprof's own profiler loaded torch._dynamo in every
run, and exited 1 where plain python gave -2; it no longer does
(:mod:`dsprof.collectors.inductor_untouched`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsprof.run import load
from tests.integration.helpers import REPO, meta, write
from tests.machine_share import recording

INTERRUPTED = '''
import os, sys, time
import torch

how = os.environ["HOW"]  # raise | signal (the test sends SIGINT) | catch:N
model = torch.nn.Linear(32, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1) if os.environ["OPTIMIZER"] == "1" else None
x = torch.randn(16, 32)
try:
    for step in range(100_000):
        if step == 6:
            if how == "raise":
                raise KeyboardInterrupt
            open(os.environ["READY"], "w").close()
        loss = model(x).sum()
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad()
        else:
            model.zero_grad()
        if step >= 6:
            time.sleep(0.05)
except KeyboardInterrupt:
    if how.startswith("catch:"):
        print("checkpoint saved")
        sys.exit(int(how[6:]))
    raise
'''
def _run(cmd: list[str], env: dict[str, str], ready: Path) -> subprocess.CompletedProcess:
    """``cmd`` until the script says it is mid-training, then SIGINT to its process, as a
    terminal's Ctrl-C (or ``kill -INT``) would send it; until it ends where it raised its own
    KeyboardInterrupt."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 200
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=200)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _env(tmp_path: Path, how: str, optimizer: bool, who: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HOW=how,
               OPTIMIZER="1" if optimizer else "0", READY=str(tmp_path / f"ready-{who}"))
    return env


def _plain_and_dsprof(tmp_path: Path, how: str, optimizer: bool
                      ) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    script = write(tmp_path / "train.py", INTERRUPTED)
    bare = _run([sys.executable, str(script)], _env(tmp_path, how, optimizer, "plain"),
                tmp_path / "ready-plain")
    under = [sys.executable, "-m", "dsprof", "run", "-q", "-o", str(tmp_path / "run"),
             str(script)]
    with recording():  # as helpers.dsprof: a timed test judging times runs alone
        ran = _run(under, _env(tmp_path, how, optimizer, "dsprof"), tmp_path / "ready-dsprof")
    return bare, ran


@pytest.mark.parametrize("how, optimizer", [
    ("raise", True), ("signal", True),
    ("raise", False)])
def test_interrupted_script_ends_dsprof_as_it_ends_python(tmp_path, how, optimizer):
    # GIVEN a training script that a KeyboardInterrupt ends mid-training: raised by the
    # script, or a SIGINT sent to its process
    # WHEN it runs plainly and under dsprof
    bare, under = _plain_and_dsprof(tmp_path, how, optimizer)
    # THEN dsprof's process ends as the plain one did (not exit 130)
    assert "KeyboardInterrupt" in bare.stderr, bare.stderr
    assert under.returncode == bare.returncode, (bare.returncode, under.stderr)
    # and the traceback is printed once, without dsprof's frames; no click "Aborted!"
    assert under.stderr.count("Traceback (most recent call last)") == 1, under.stderr
    assert under.stderr.splitlines().count("KeyboardInterrupt") == 1, under.stderr
    assert "train.py" in under.stderr and "dsprof/" not in under.stderr
    assert "Aborted!" not in under.stderr
    if how == "raise":  # one place it can stop: the very same lines as plain python's
        assert under.stderr == bare.stderr
    # and the run is saved as interrupted, readable
    m = meta(tmp_path / "run")
    assert (m["status"], m["exit_status"], m["exit_reason"]) == ("finished", 130, "interrupt")
    with load(tmp_path / "run") as run:
        assert run.sql("SELECT count(*) FROM steps")[0][0] >= 5


@pytest.mark.parametrize("status", [3])  # 0 takes the same path
def test_script_that_catches_the_interrupt_keeps_its_own_status(tmp_path, status):
    # GIVEN a script that catches the KeyboardInterrupt of a SIGINT and exits 0 or 3 itself
    # WHEN it runs plainly and under dsprof
    bare, under = _plain_and_dsprof(tmp_path, f"catch:{status}", optimizer=True)
    # THEN both exit with the script's status, output unchanged, the run saved as an exit
    assert (bare.returncode, under.returncode) == (status, status), under.stderr
    assert under.stdout == bare.stdout == "checkpoint saved\n"
    m = meta(tmp_path / "run")
    assert (m["status"], m["exit_status"], m["exit_reason"]) == ("finished", status, "exit")
