"""What runs after the script's last line runs as without dsprof: dsprof's own end-of-run work
(the save, ingest, analysis, its summary) sits between that line and the script's atexit
handlers, and must leave the script's exit hooks (its globals' destructors, its gc callbacks)
what the plain interpreter leaves them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.helpers import dsprof, plain, write

pytestmark = pytest.mark.slow

TRAINS = """
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(20):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
"""

# Globals a destructor reads at exit. Where a library holds __main__ alive (torch does), the
# interpreter's teardown sets the module's names to None in the order they were bound, so the
# destructor of `s` finds `before` already None and `after` not yet; where nothing does, the
# final collection finalizes `s` with every global in place.
TEARDOWN_ORDER = """
import sys
if sys.argv[1] == "torch":
    import torch
def before():
    return "before"
class S:
    def __del__(self):
        print("del saw", [f if f is None else f() for f in (before, after)], flush=True)
s = S()
def after():
    return "after"
"""


@pytest.mark.parametrize("library", ["torch", "none"])
def test_a_destructor_at_exit_sees_the_globals_plain_python_leaves_it(tmp_path, library):
    # GIVEN a script whose global's __del__ reads globals bound before and after it
    write(tmp_path / "order.py", TEARDOWN_ORDER)
    plain = subprocess.run([sys.executable, "order.py", library], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, check=False)
    said = [line for line in plain.stdout.splitlines() if line.startswith("del saw")]
    assert said == ["del saw [None, 'after']" if library == "torch"
                    else "del saw ['before', 'after']"], plain.stdout + plain.stderr
    # WHEN it runs under dsprof, as a script and as a module
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "r1"), "order.py", library,
                 cwd=tmp_path)
    mod = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "r2"), "-m", "order",
                 library, cwd=tmp_path)
    # THEN its destructor saw what it sees without dsprof: dsprof let the globals go as the
    # interpreter does, neither earlier (a None it would not see) nor later (a skipped __del__)
    for run in (res, mod):
        assert run.code == 0, run.stderr
        assert [line for line in run.stdout.splitlines() if line.startswith("del saw")] == said


# A gc callback the script registers after training, and an atexit handler that says how often
# it was called from there to the handler: the plain interpreter runs no collection in between.
GC_CALLBACK = """
import atexit
import gc

import torch

""" + TRAINS + """calls = []
gc.callbacks.append(lambda phase, info: calls.append(phase))
atexit.register(lambda: print("gc callbacks before the atexit handler:", len(calls)))
"""


def test_dsprofs_end_of_run_work_calls_none_of_the_scripts_gc_callbacks(tmp_path):
    # GIVEN a script that registers a gc callback after its last step
    script = write(tmp_path / "gc_hook.py", GC_CALLBACK)
    bare = plain(script)
    assert bare.stdout == "gc callbacks before the atexit handler: 0\n", bare.stderr
    # WHEN it runs under dsprof with its end-of-run analysis and summary (collections of
    # dsprof's own allocations: 288 callbacks were counted before)
    res = dsprof("run", "-o", str(tmp_path / "run"), str(script))
    # THEN the script's callback was called for none of them
    assert res.code == 0, res.stderr
    assert res.stdout == bare.stdout


# A hang watchdog armed at the last line (a dump of every thread's stack into a file every 0.2
# s), cancelled by the script's first atexit handler: plain python dumps nothing in between.
WATCHDOG = """
import atexit
import faulthandler
import sys

import torch

""" + TRAINS + """dumps = open(sys.argv[1], "w")
faulthandler.dump_traceback_later(0.2, repeat=True, file=dumps)
atexit.register(lambda: print("armed at exit:", faulthandler.cancel_dump_traceback_later()))
"""


def test_a_watchdog_the_script_armed_does_not_fire_inside_dsprofs_end_of_run_work(tmp_path):
    # GIVEN a script that arms a repeating faulthandler watchdog at its last line and cancels
    # it in its atexit handler
    script = write(tmp_path / "watchdog.py", WATCHDOG)
    bare = plain(script, str(tmp_path / "plain.txt"))
    assert bare.returncode == 0 and (tmp_path / "plain.txt").read_text() == "", bare.stderr
    # WHEN it runs under dsprof, whose save, ingest, analysis and summary take a second there
    res = dsprof("run", "-o", str(tmp_path / "run"), str(script), str(tmp_path / "dsprof.txt"))
    # THEN the watchdog dumped nothing (it dumped dsprof's frames every 0.2 s), the script's
    # handler ran as plain, and the run was analysed
    assert res.code == 0, res.stderr
    assert (tmp_path / "dsprof.txt").read_text() == ""
    assert "armed at exit: None" in res.stdout
    assert (tmp_path / "run" / "findings.json").exists()
