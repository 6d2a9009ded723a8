"""A script whose signal handler raises (a time limit by ``setitimer``) gets every error its
handler raises, and dsprof keeps its profiler whole: the handler waits for dsprof's
step-boundary work (collectors/script_signals.py). Before, errors the handler raised inside
that work were caught by dsprof (a job with a 2 s ``alarm`` trained on for 10 minutes),
dsprof turned collectors off ("timeline collector failed ...: Tick"), and, once let through,
they left the profiler half started and the process died of SIGSEGV at its exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import REPO, dsprof, meta, write
from tests.machine_share import let_a_recording_in

TICKING = '''
import signal
import sys

import torch
from torch import nn


class Tick(Exception):
    pass


fired = caught = 0
armed = False


def on_alarm(signum, frame):
    global fired, armed
    if armed:
        armed = False
        fired += 1
        raise Tick()


torch.manual_seed(0)
model = nn.Linear(64, 64)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(32, 64)
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.004, 0.004)
for step in range(int(sys.argv[1])):
    try:
        armed = True
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        armed = False
    except Tick:
        caught += 1
    # torch's own: raised in optimizer.step's `finally`, an error leaves grad mode off (plain too)
    torch.set_grad_enabled(True)
signal.setitimer(signal.ITIMER_REAL, 0, 0)
print(f"fired {fired} caught {caught}")
'''


def test_a_raising_signal_handler_reaches_the_script_and_leaves_dsprof_whole(tmp_path):
    script = write(tmp_path / "ticking.py", TICKING)
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "run"), "--wait", "1", "--warmup", "1",
                 "--active", "2", "--repeat", "0", str(script), "1500")
    # THEN the script ends as it does plainly, with nothing of dsprof's turned off
    assert res.code == 0, res.stderr[-3000:]
    assert "[dsprof ERROR]" not in res.stderr, res.stderr[-3000:]
    fired, caught = (int(w) for w in res.stdout.split()[1::2])
    # AND the script caught what its handler raised (a handler that lands in torch's own
    # catch-alls can be lost without dsprof too: at most a few)
    assert fired > 50 and fired - caught <= max(2, fired // 100), res.stdout


# Lightning's Trainer chains the SIGTERM handler it finds to its own, which only marks the
# signal: its loop then stops at the batch's end with SIGTERMException (a SystemExit). READY is
# touched at batch 10, after which each batch sleeps 50 ms.
LIGHTNING_SIGTERM = '''
import os
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(16, 2)

    def training_step(self, batch, i):
        x, y = batch
        if i == 10:
            open(os.environ["READY"], "w").close()
        if i >= 10:
            time.sleep(0.05)
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Seen(L.Callback):
    def on_exception(self, trainer, module, exc):
        print("on_exception:", type(exc).__name__, flush=True)


data = TensorDataset(torch.randn(4096, 16), torch.randint(0, 2, (4096,)))
trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, callbacks=[Seen()],
                    accelerator="cpu")
trainer.fit(Net(), DataLoader(data, batch_size=8))
'''


def _terminated(cmd: list[str], ready: Path) -> subprocess.CompletedProcess:
    """``cmd`` until the script says it trains, then SIGTERM, as a cluster's preemption."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), READY=str(ready))
    let_a_recording_in()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 200
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=200)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_lightnings_sigterm_handling_runs_as_without_dsprof(tmp_path):
    # GIVEN a Lightning fit that SIGTERM reaches mid-epoch
    script = write(tmp_path / "fit.py", LIGHTNING_SIGTERM)
    bare = _terminated([sys.executable, str(script)], tmp_path / "ready-plain")
    assert bare.stdout == "on_exception: SIGTERMException\n", bare.stderr[-2000:]
    # WHEN it runs under dsprof (whose own SIGTERM handler Lightning chained when it could read
    # it: SystemExit raised mid-batch, exit 143)
    under = _terminated([sys.executable, "-m", "dsprof", "run", "-q", "--no-analyze", "-o",
                         str(tmp_path / "run"), str(script)], tmp_path / "ready-dsprof")
    # THEN Lightning stops at the batch's end as it does plainly, with the same status
    assert under.stdout == bare.stdout, under.stderr[-2000:]
    assert under.returncode == bare.returncode
    # AND the run is saved
    assert meta(tmp_path / "run")["status"] == "finished"
