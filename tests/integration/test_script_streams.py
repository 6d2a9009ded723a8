"""Scripts that close or replace ``sys.stderr``: dsprof's closing lines go to the stderr it
started with, never into a file the script put in its place, and a closed stderr does not
change the exit status (writing the summary there raised: status 1 for a script's 0)."""

from __future__ import annotations

import pytest

from tests.integration.helpers import dsprof, plain, write

LOOP = """
import sys
import torch

model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(20):
    loss = model(torch.randn(4, 8)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
print("trained", flush=True)
"""


def test_a_script_that_closes_stderr_keeps_its_exit_status(tmp_path):
    # GIVEN a script that closes sys.stderr as its last act
    script = write(tmp_path / "closes.py", LOOP + "sys.stderr.close()\n")
    bare = plain(script)
    # WHEN run under dsprof, which prints its summary after the script
    res = dsprof("run", "-o", str(tmp_path / "run"), str(script), cwd=tmp_path)
    # THEN the exit status and output are the script's
    assert bare.returncode == 0, bare.stderr
    assert res.code == 0, res.stderr
    assert res.stdout == bare.stdout
    assert "lost sys.stderr" not in res.stderr and "ValueError" not in res.stderr


def test_a_script_that_redirects_stderr_gets_no_dsprof_lines_in_its_file(tmp_path):
    # GIVEN a script that sends stderr to a log file of its own and leaves it there
    script = write(tmp_path / "redirects.py", LOOP + (
        "import os\n"
        "sys.stderr = open(os.path.join(os.path.dirname(__file__), 'train.log'), 'w')\n"
        "print('its own line', file=sys.stderr, flush=True)\n"))
    bare = plain(script)
    res = dsprof("run", "-o", str(tmp_path / "run"), str(script), cwd=tmp_path)
    assert bare.returncode == 0 and res.code == 0, res.stderr
    # THEN its log file holds its own line only, as without dsprof
    assert (tmp_path / "train.log").read_text() == "its own line\n"
    # AND dsprof's summary went to the terminal's stderr
    assert "dsprof summary" in res.stderr


@pytest.mark.parametrize("steps", [20, 6])
def test_the_profiler_window_adds_no_line_of_torchs_to_the_scripts_stderr(tmp_path, steps):
    # GIVEN a script that writes its own line to stderr every step and frees, inside
    # dsprof's window, tensors it allocated before it (torch logs "Memory block of unknown
    # size was allocated before the profiling started" at the first such free); or that ends
    # in the window's warm-up (stopping a prepared, unstarted session, Kineto logs
    # "disableProfiler called but no active profiling session found")
    script = write(tmp_path / "talks.py", LOOP.replace("range(20)", f"range({steps})").replace(
        "    opt.step()\n",
        "    opt.step()\n"
        "    print(f'step {step}', file=sys.stderr, flush=True)\n"))
    bare = plain(script)
    # WHEN run under dsprof, quiet
    res = dsprof("run", "-q", "-o", str(tmp_path / "run"), str(script), cwd=tmp_path)
    # THEN stderr is the script's own, line for line
    assert bare.returncode == 0 and res.code == 0, res.stderr
    assert res.stderr == bare.stderr == "".join(f"step {i}\n" for i in range(steps))


def test_dsprofs_summary_comes_after_what_the_script_prints_on_its_way_out(tmp_path):
    # GIVEN a script that leaves a progress line unfinished (as a bar never closed does) and
    # ends it from an atexit handler
    script = write(tmp_path / "way_out.py", LOOP.replace('print("trained", flush=True)\n', "")
                   + (
        "import atexit\n"
        "atexit.register(lambda: sys.stderr.write(' (saved at exit)\\n'))\n"
        "sys.stderr.write('step 20 of 20')\n"))
    bare = plain(script)
    # WHEN run under dsprof, which prints its summary after the script
    res = dsprof("run", "-o", str(tmp_path / "run"), str(script), cwd=tmp_path)
    assert bare.returncode == 0 and res.code == 0, res.stderr
    assert bare.stderr == "step 20 of 20 (saved at exit)\n"
    # THEN the script's output is whole, and dsprof's summary starts on a line of its own
    # after it (it began on the unfinished line, the atexit handler's words after it)
    text = "\n".join(line for line in res.stderr.split("\n") if not line.startswith("[dsprof "))
    assert text.startswith(bare.stderr), res.stderr
    assert text[len(bare.stderr):].startswith("──"), res.stderr


@pytest.mark.parametrize("ending", [
    # an atexit handler that ends the process hard (os._exit skips the handlers after it)
    "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    # the script runs the exit functions itself, as launchers do before a hard exit (the
    # registry is empty after)
    "import atexit\natexit._run_exitfuncs()\n"])
def test_the_summary_is_said_once_however_the_exit_functions_run(tmp_path, ending):
    # GIVEN a script whose exit functions run otherwise than at the interpreter's exit
    script = write(tmp_path / "ends.py", LOOP + ending)
    bare = plain(script)
    # WHEN run under dsprof
    res = dsprof("run", "-o", str(tmp_path / "run"), str(script), cwd=tmp_path)
    # THEN its status and output are the script's, and dsprof's summary is there, once (it
    # was lost: written at exit after the handlers, which never came)
    assert bare.returncode == res.code == 0, res.stderr
    assert res.stdout == bare.stdout == "trained\n"
    assert res.stderr.count("──── dsprof ────") == 1, res.stderr
    assert res.stderr.count("dsprof summary ") == 1, res.stderr
