"""A script whose signal handler raises (a time limit by ``setitimer``) gets every error its
handler raises, and dsprof keeps its profiler whole: the handler waits for dsprof's
step-boundary work (collectors/script_signals.py). Before, errors the handler raised inside
that work were caught by dsprof (a job with a 2 s ``alarm`` trained on for 10 minutes),
dsprof turned collectors off ("timeline collector failed ...: Tick"), and, once let through,
they left the profiler half started and the process died of SIGSEGV at its exit."""

from __future__ import annotations

from tests.integration.helpers import dsprof, write

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
