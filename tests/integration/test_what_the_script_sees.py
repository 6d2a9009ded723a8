"""What a script can see of its own process is what ``python script.py`` shows it: its
``__main__`` globals, torch's random stream, the settings it makes in ``os.environ``, its
threads. Each script here looks at one of them, then trains three steps (so that dsprof has
steps to find), and prints what it saw; under dsprof it must print the same, or dsprof must say
why not."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import dsprof, meta, plain, runs_as_without_dsprof, write

pytestmark = pytest.mark.slow

TRAINS = """
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
"""

MAIN_GLOBALS = """
import torch

print(sorted(globals()))
print({k: type(globals()[k]).__name__ for k in ("__builtins__", "__loader__", "__spec__",
                                                 "__cached__", "__package__", "__doc__")})
__builtins__.print("through __builtins__")
print(len(__loader__.get_source("__main__").splitlines()), "lines of source")
""" + TRAINS

UNDRAWN = """
import torch

# a generator seeded as the global one was: equal states mean nothing has drawn from it yet
fresh = torch.Generator().manual_seed(torch.initial_seed())
print("undrawn at start:", torch.equal(fresh.get_state(), torch.get_rng_state()))
""" + TRAINS

SETS_THREADS = """
import os
import sys
print("loaded before import torch:", sorted({"torch", "numpy"} & set(sys.modules)))
os.environ["OMP_NUM_THREADS"] = "2"
import torch

print("threads", torch.get_num_threads())
print("torch's loader:", type(torch.__loader__).__name__, type(torch.__spec__.loader).__name__)
""" + TRAINS


def test_the_script_gets_the_globals_python_gives_main(tmp_path):
    # GIVEN a script that prints its globals and uses __builtins__ (a module in __main__, a
    # dict elsewhere) and __loader__
    script = write(tmp_path / "main_globals.py", MAIN_GLOBALS)
    # WHEN it runs under dsprof THEN it prints what it prints without
    res = runs_as_without_dsprof(script, tmp_path / "run")
    assert "'__builtins__': 'module'" in res.stdout and "through __builtins__" in res.stdout


def test_the_script_finds_the_global_generator_undrawn(tmp_path):
    # GIVEN a script that asks, before it draws anything, whether torch's generator was drawn
    # (dsprof's own timings at session start draw from a generator of their own)
    script = write(tmp_path / "undrawn.py", UNDRAWN)
    # WHEN it runs under dsprof THEN it prints what it prints without: nothing drew from it
    res = runs_as_without_dsprof(script, tmp_path / "run")
    assert "undrawn at start: True" in res.stdout, res.stdout


def test_what_the_script_sets_before_it_imports_torch_holds(tmp_path):
    # GIVEN a script that looks, at its first line, for torch and numpy among the loaded
    # modules, asks for 2 threads in os.environ, then imports torch; started with
    # OMP_NUM_THREADS=1 in its environment (as the test helpers start every run)
    script = write(tmp_path / "sets_threads.py", SETS_THREADS)
    # WHEN it runs under dsprof THEN it prints what it prints without: neither was loaded,
    # torch loads at its import and reads the script's setting (2 threads), and torch's
    # loader is Python's own (dsprof.collectors.torch_arrival)
    out = tmp_path / "run"
    res = runs_as_without_dsprof(script, out)
    assert "loaded before import torch: []" in res.stdout and "threads 2" in res.stdout
    # AND the session that started at that import found the steps, and names no late setting
    assert meta(out)["steps_source"] == "optimizer"
    assert "late_environment" not in meta(out)


NO_TORCH = """
import sys
print("no torch in this script")
sys.exit(3)
"""


def test_a_script_that_never_imports_torch_keeps_its_status_and_is_named(tmp_path):
    # GIVEN a script that imports no torch and exits 3
    script = write(tmp_path / "no_torch.py", NO_TORCH)
    out = tmp_path / "run"
    # WHEN it runs under dsprof
    res = dsprof("run", "-o", str(out), str(script), env={"COLUMNS": "250"})
    # THEN its output and status are its own, and the run says there was nothing to profile
    assert res.code == 3 and res.stdout == "no torch in this script\n", res.stderr
    assert meta(out)["script_imported_torch"] is False
    assert meta(out)["exit_status"] == 3
    said = " ".join(res.stderr.split())
    assert "the script never imported torch" in said, res.stderr
    # (its one step is dsprof's own start after the script: no step time is given)
    assert "steps:" not in said and "median" not in said, res.stderr


IN_A_THREAD = """
import threading

loaded = {}
loader = threading.Thread(target=lambda: loaded.update(torch=__import__("torch")))
loader.start()
loader.join()
torch = loaded["torch"]
""" + TRAINS.replace("range(3)", "range(10)") + """
print("trained")
"""


def test_torch_imported_in_a_thread_is_profiled_from_the_main_thread(tmp_path):
    # GIVEN a script that imports torch in a thread of its own, then trains on the main thread
    script = write(tmp_path / "in_a_thread.py", IN_A_THREAD)
    out = tmp_path / "run"
    # WHEN it runs under dsprof THEN it prints what it prints without
    res = runs_as_without_dsprof(script, out)
    # AND the session started on the main thread (the profiler records the thread that
    # starts it): no complaint of a profiler stopped elsewhere, the steps found and profiled
    assert "Requested callback is not found" not in res.stderr, res.stderr
    assert "no active profiling session" not in res.stderr, res.stderr
    m = meta(out)
    assert m["steps_source"] == "optimizer" and m["windows"], m.get("windows")


RUN_DIR_REPLACED = """
import shutil
import sys

# the run directory replaced by a file before import torch: the session cannot start there
shutil.rmtree(sys.argv[1])
open(sys.argv[1], "w").close()
import torch
""" + TRAINS + """
print("trained")
sys.exit(4)
"""


def test_a_session_that_cannot_start_leaves_the_script_its_output_and_status(tmp_path):
    # GIVEN a script that makes its run directory unusable before it imports torch
    script = write(tmp_path / "replaces_run.py", RUN_DIR_REPLACED)
    out = tmp_path / "run"
    # WHEN it runs under dsprof, whose session starts at that import
    res = dsprof("run", "-o", str(out), str(script), str(out))
    # THEN the script ran to its end with its own output and status, unprofiled, and dsprof
    # said why in one line, no traceback
    assert res.code == 4 and res.stdout == "trained\n", res.stderr
    assert "the dsprof session did not start (NotADirectoryError" in res.stderr
    assert "Traceback" not in res.stderr


AT_EXIT = """
import atexit
import pickle
import sys

import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.lin(x)


model = Net()


def on_exit():
    # what an atexit handler of the script sees: its argv, and its classes in __main__
    print("argv at exit", sys.argv, "main is the script:", hasattr(sys.modules["__main__"], "Net"))
    print("pickled at exit", len(pickle.dumps(model)) > 0)


atexit.register(on_exit)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
print("trained")
"""


def test_the_scripts_atexit_handlers_see_its_argv_and_main(tmp_path):
    # GIVEN a script whose atexit handler reads sys.argv and pickles a class of the script's
    script = write(tmp_path / "at_exit.py", AT_EXIT)
    # THEN it sees what it sees without dsprof (it saw dsprof's command line, and pickling
    # failed: "attribute lookup Net on __main__ failed")
    res = runs_as_without_dsprof(script, tmp_path / "run", "--flag")
    assert "main is the script: True" in res.stdout and "pickled at exit True" in res.stdout
    assert "--flag']" in res.stdout and "Exception ignored" not in res.stderr


RESTARTS = """
import os
import subprocess
import sys

import torch

phase = os.environ.get("RESTART_PHASE", "0")
print("phase", phase, "orig_argv", sys.orig_argv[1:])
""" + TRAINS + """
if phase == "0":
    # a script that starts itself again (restart on a new configuration, elastic restarts)
    os.environ["RESTART_PHASE"] = "1"
    child = subprocess.run(sys.orig_argv, check=False)
    print("child exit status", child.returncode)
    sys.exit(child.returncode)
"""


def test_a_script_restarted_from_its_orig_argv_runs_again(tmp_path):
    # GIVEN a script that runs sys.orig_argv once more in a child process
    script = write(tmp_path / "restarts.py", RESTARTS)
    # WHEN it runs under dsprof THEN it prints what it prints without: orig_argv is its own
    # command line, and the child ran the script (it was dsprof's command: the child re-ran
    # dsprof, which refused the run directory, "already exists and is not empty", status 2)
    res = runs_as_without_dsprof(script, tmp_path / "run", "--x")
    assert "phase 1 orig_argv" in res.stdout and "child exit status 0" in res.stdout
    assert f"orig_argv ['{script}', '--x']" in res.stdout


JOINS_EVERY_THREAD = """
import os
import threading

import torch


def threads(when):
    print(when, threading.active_count(), sorted(t.name for t in threading.enumerate()),
          flush=True)


threads("after import torch:")  # the capture of step 0 under way
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(64, 32), torch.randn(64, 1)
for _ in range(30):
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
threads("after training:")
threading.Thread(target=lambda: None, name="script-worker").start()
pid = os.fork()
if pid == 0:
    threads("forked child:")
    os._exit(0)
os.waitpid(pid, 0)
# as test harnesses and shutdown code do: every thread but this one joined, no timeout
for t in threading.enumerate():
    if t is not threading.main_thread():
        t.join()
threads("joined all:")
"""


def test_a_script_sees_its_own_threads_only_and_joins_them_all(tmp_path):
    # GIVEN a training script that lists its threads, forks, and joins every other thread
    # without a timeout
    script = write(tmp_path / "joins_every_thread.py", JOINS_EVERY_THREAD)
    out = tmp_path / "run"
    bare = plain(script, timeout=120)
    # WHEN it runs under dsprof (a hang is a TimeoutExpired, not a blocked test)
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), timeout=240)
    # THEN it lists what it lists without dsprof (it listed dsprof-sampler, dsprof-sigterm,
    # dsprof-capture-cap and dsprof-capture-memory) and its join-all loop ends
    assert bare.returncode == 0, bare.stderr
    assert res.code == 0, res.stderr
    assert res.stdout == bare.stdout
    assert "joined all: 1 ['MainThread']" in res.stdout
    assert "Fatal Python error" not in res.stderr
    # AND dsprof's threads did their jobs: the steps recorded, the host sampled
    m = meta(out)
    assert m["status"] == "finished" and m["steps_recorded"] == 30
    samples = json.loads((out / "raw" / "rank0" / "samples.json").read_text())
    assert samples["columns"]["ts_ns"]


LOW_RECURSION_LIMIT = """
import sys
sys.setrecursionlimit(250)
import torch

seen = set()
model = torch.nn.Linear(4, 1)
model.register_forward_hook(lambda *a: seen.add(("forward hook", sys.getrecursionlimit())))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
opt.register_step_post_hook(lambda *a: seen.add(("step hook", sys.getrecursionlimit())))
for _ in range(16):
    model(torch.ones(2, 4)).sum().backward()
    seen.add(("loop", sys.getrecursionlimit()))
    opt.step()
    opt.zero_grad()
print("limits seen", sorted(seen))
"""


def test_a_script_with_a_low_recursion_limit_is_profiled_and_keeps_its_limit(tmp_path):
    # GIVEN a script that lowers its recursion limit to 250 at its top, then imports torch
    # (the session starts at the end of that import, the first window imports torch._dynamo)
    # and reads the limit in its loop, its forward hook and its optimizer's step hook
    script = write(tmp_path / "low_limit.py", LOW_RECURSION_LIMIT)
    out = tmp_path / "run"
    # WHEN it runs under dsprof THEN it prints what it prints without: its own limit at each
    # of its lines
    res = runs_as_without_dsprof(script, out)
    assert ("limits seen [('forward hook', 250), ('loop', 250), ('step hook', 250)]"
            in res.stdout), res.stdout
    # AND its steps were profiled: no collector hit the limit
    assert "RecursionError" not in res.stderr, res.stderr
    assert [w["steps"] for w in meta(out)["windows"] if w["kind"] == "window"] == [[7, 8, 9]]


KINETO_ENV = """
import os
import subprocess
import sys

import torch

seen = {os.environ.get("KINETO_LOG_LEVEL")}
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(14):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
    seen.add(os.environ.get("KINETO_LOG_LEVEL"))
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('KINETO_LOG_LEVEL'))"],
                       capture_output=True, text=True, check=True).stdout.strip()
print("KINETO_LOG_LEVEL seen", sorted(map(str, seen)), "child", child)
"""


@pytest.mark.parametrize("own", [None, "3"])
def test_the_scripts_environment_has_kinetos_log_level_only_as_the_user_set_it(tmp_path, own):
    # GIVEN a script that reads KINETO_LOG_LEVEL after `import torch` (where dsprof's session
    # and its first profiler start), at every step (windows start and stop) and in a child
    # process; run without the variable and with the user's own value
    script = write(tmp_path / "kineto_env.py", KINETO_ENV)
    env = {} if own is None else {"KINETO_LOG_LEVEL": own}
    bare = plain(script, env=env)
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "run"), str(script), env=env)
    # THEN it sees what it sees without dsprof: nothing, or the user's value
    assert bare.returncode == 0 and res.code == 0, res.stderr
    assert res.stdout == bare.stdout == f"KINETO_LOG_LEVEL seen ['{own}'] child {own}\n"
    # AND without a value of the user's, Kineto's USDT lines still stay off the terminal
    if own is None:
        assert "USDT" not in res.stderr, res.stderr


INFERENCE_ONLY = """
import atexit
import sys

import torch

model = torch.nn.Linear(4, 1)
with torch.no_grad():  # no optimizer: torch 2.13's optimizer constructor loads Dynamo
    for _ in range(30):
        model(torch.ones(2, 4)).sum().item()
atexit.register(lambda: print("loaded at exit:",
                              sorted({"torch._dynamo", "torch._inductor"} & set(sys.modules))))
"""


def test_a_script_that_never_loads_dynamo_does_not_get_it_from_dsprof(tmp_path):
    # GIVEN an inference script that never loads torch._dynamo or torch._inductor (torch's
    # profiler asks for Inductor's config when it prepares: dsprof's loaded both, ~850
    # modules and a second, and Dynamo's atexit handlers then changed its Ctrl-C exit status)
    script = write(tmp_path / "infer.py", INFERENCE_ONLY)
    out = tmp_path / "run"
    # WHEN it runs under dsprof THEN at its exit it finds what it finds without dsprof
    res = runs_as_without_dsprof(script, out)
    assert res.stdout == "loaded at exit: []\n"
    # AND its steps were found and profiled all the same
    assert meta(out)["steps_recorded"] == 30
    assert [w["steps"] for w in meta(out)["windows"] if w["kind"] == "window"] != []
