"""The Python children a script starts with subprocess (dsprof/collectors/python_children.py):
recorded within bounds, observed without changing what Popen does, and the summary's note
(dsprof/reports/python_child_note.py)."""

from __future__ import annotations

import subprocess
import sys
import traceback

import pytest

from dsprof.collectors import python_children
from dsprof.collectors.python_children import MAX_ARG_CHARS, MAX_ARGS, MAX_CHILDREN, ChildLog
from dsprof.manifest import Target
from dsprof.reports.python_child_note import profile_command, python_child_notes

PY = sys.executable


@pytest.fixture
def log():
    # GIVEN the hooks installed, as the deferred session installs them before the script
    recorded = python_children.install()
    yield recorded
    recorded.stop()
    python_children.take_meta()  # no later session of this process writes them


def test_children_past_the_bound_are_only_counted_and_long_commands_cut():
    # GIVEN more Python children than the bound, one with too many and too long words
    children = ChildLog(pid=__import__("os").getpid())
    long_argv = [PY, "train.py", *["x" * (MAX_ARG_CHARS + 50)] * (MAX_ARGS + 10)]
    children.started(None, long_argv)
    for i in range(MAX_CHILDREN + 4):
        children.started(None, [PY, "train.py", f"--seed={i}"])
    children.stop()
    meta = children.to_meta()
    # THEN MAX_CHILDREN are kept, the rest counted
    assert len(meta["python_children"]) == MAX_CHILDREN
    assert meta["python_children_more"] == 5
    # AND the long command is kept to MAX_ARGS words of MAX_ARG_CHARS, marked cut
    first = meta["python_children"][0]
    assert len(first["argv"]) == MAX_ARGS and first["cut"] is True
    assert max(len(w) for w in first["argv"]) == MAX_ARG_CHARS
    assert "cut" not in meta["python_children"][1]


@pytest.mark.parametrize(("argv", "launcher"), [
    ([PY, "train.py"], ""),
    (["/usr/bin/python3.11", "-u", "train.py"], ""),
    ("python train.py --lr 0.1", ""),
    (["/venv/bin/torchrun", "--nproc-per-node=2", "train.py"], "torchrun"),
    ([PY, "-m", "torch.distributed.run", "train.py"], "torchrun"),
    (["accelerate", "launch", "train.py"], "accelerate"),
    (["deepspeed", "train.py"], "deepspeed"),
    (["git", "--version"], None),
    ("python train.py > log.txt", None),  # the shell's syntax: not read as words
    ([PY, "/venv/lib/torch/_inductor/compile_worker/__main__.py", "--workers=2"], None),
])
def test_which_children_are_python(argv, launcher):
    children = ChildLog(pid=__import__("os").getpid())
    children.started(None, argv)
    entries = children.to_meta().get("python_children", [])
    if launcher is None:
        assert entries == []
    else:
        assert entries[0].get("launcher", "") == launcher


def test_popen_runs_as_without_dsprof_and_its_end_is_recorded(log):
    # WHEN the script runs a Python child that exits 3, and a program that is no Python
    done = subprocess.run([PY, "-c", "import sys; print('hi'); sys.exit(3)"],
                          capture_output=True, text=True, check=False)
    subprocess.run(["git", "--version"], capture_output=True, check=False)
    log.stop()
    # THEN its output and status are its own
    assert (done.returncode, done.stdout) == (3, "hi\n")
    # AND only the Python child is recorded, with its exit status, seen ending
    (child,) = log.to_meta()["python_children"]
    assert child["argv"][1] == "-c" and child["exit_status"] == 3 and child["ended"] is True
    # AND Popen is subprocess's own again
    assert "dsprof" not in subprocess.Popen._execute_child.__code__.co_filename


def test_a_child_still_running_at_the_end_says_so(log):
    proc = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    try:
        log.stop()
    finally:
        proc.kill()
        proc.wait()
    (child,) = log.to_meta()["python_children"]
    assert child["ended"] is False and child["exit_status"] is None


def test_a_failed_start_raises_as_without_dsprof(log):
    # WHEN the script starts a program that does not exist
    with pytest.raises(FileNotFoundError) as caught:
        subprocess.run(["/no/such/python3"], check=False)
    # THEN the error's traceback holds no frame of dsprof's (the script may print it)
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert not any("dsprof" in f.filename for f in frames)
    assert frames[-1].name == "_execute_child"
    # AND nothing is recorded: no child ran
    log.stop()
    assert log.to_meta() == {}


@pytest.mark.parametrize(("argv", "launcher", "command"), [
    ([PY, "train.py", "300"], None, "dsprof run train.py 300"),
    ([PY, "-u", "-X", "dev", "train.py", "--lr", "0.1"], None,
     "dsprof run train.py --lr 0.1"),
    ([PY, "-m", "pkg.train", "x"], None, "dsprof run -m pkg.train x"),
    ([PY, "-c", "pass"], None, None),
    ([PY, "-m", "torch.distributed.run", "--nproc-per-node=2", "train.py", "--lr", "1"],
     "torchrun", "dsprof run --nproc-per-node 2 train.py --lr 1"),
    (["torchrun", "--standalone", "--nproc_per_node", "4", "train.py"], "torchrun",
     "dsprof run --nproc-per-node 4 train.py"),
    (["torchrun", "--nnodes=2", "--nproc-per-node=8", "train.py"], "torchrun",
     "torchrun --nnodes=2 --nproc-per-node=8 -m dsprof run train.py"),
    (["torchrun", "--nproc-per-node=gpu", "train.py"], "torchrun",
     "torchrun --nproc-per-node=gpu -m dsprof run train.py"),
    (["accelerate", "launch", "--num_processes", "2", "train.py", "--bs", "8"], "accelerate",
     "accelerate launch --num_processes 2 -m dsprof run train.py --bs 8"),
    (["deepspeed", "--num_gpus=2", "train.py"], "deepspeed",
     "deepspeed --num_gpus=2 --module dsprof run train.py"),
    # a run directory's words are shell words, never shell syntax
    ([PY, "train.py", "a; rm -rf ~", "$(x)"], None, "dsprof run train.py 'a; rm -rf ~' '$(x)'"),
])
def test_the_command_that_profiles_a_child(argv, launcher, command):
    assert profile_command(argv, launcher) == command


def _meta(seconds, source="none", argv=(PY, "train.py", "300"), **more):
    return {"steps_source": source, "python_children": [
        {"argv": list(argv), "seconds": seconds, "ended": True, "exit_status": 0, **more}]}


def test_the_note_names_the_child_and_the_command():
    (note,) = python_child_notes(_meta(4.6), Target("script", "driver.py", ("driver.py",)))
    assert "a Python child process it started ran unprofiled (python train.py 300, 4.6 s, " \
           "exit status 0)" in note
    assert note.endswith("profile it with: dsprof run train.py 300")


def test_no_note_when_the_script_trained_or_the_child_was_short():
    assert python_child_notes(_meta(30.0, source="optimizer"), None) == []
    assert python_child_notes(_meta(0.05), None) == []
    assert python_child_notes(_meta(30.0, argv=(PY, "-c", "import torch")), None) == []


def test_the_script_itself_a_launcher_gets_the_launchers_command():
    # GIVEN `dsprof run $(which torchrun) --nproc-per-node=2 train.py`: its workers ran
    target = Target("script", "torchrun", ("/venv/bin/torchrun", "--nproc-per-node=2",
                                           "train.py"))
    meta = {"steps_source": "none", "python_children": [
        {"argv": [PY, "-u", "train.py"], "seconds": 6.0, "ended": True, "exit_status": 0}] * 2}
    (note,) = python_child_notes(meta, target)
    assert "the script is torchrun's launcher, and the 2 Python processes" in note
    assert note.endswith("profile them with: dsprof run --nproc-per-node 2 train.py")


def test_a_hostile_command_stays_on_one_line():
    (note,) = python_child_notes(_meta(5.0, argv=(PY, "train.py", "x\nimport os")), None)
    assert "\n" not in note and "'x\\nimport os'" in note


def test_a_child_torchs_own_code_starts_is_not_the_scripts(log, tmp_path):
    # GIVEN torch's own code starting a Python child (collect_env's run(), as torch.compile's
    # cpu_vec_isa probe runs `python -c ...` through subprocess.run), and the script its own
    from torch.utils import collect_env
    child = tmp_path / "child.py"
    child.write_text("print('hi')\n")
    rc, out, _ = collect_env.run([PY, str(child), "torch"])
    subprocess.run([PY, str(child), "script"], capture_output=True, check=True)
    log.stop()
    # THEN torch's child ran as without dsprof, and only the script's is recorded
    assert (rc, out) == (0, "hi")
    (recorded,) = log.to_meta()["python_children"]
    assert recorded["argv"][2] == "script"


def test_a_child_reaped_outside_popen_is_timed_to_its_end(log, tmp_path):
    # GIVEN a driver whose children are reaped by asyncio's child watcher and by its own
    # os.waitpid (psutil and multiprocessing wait so too), then it goes on for a while
    import asyncio
    import os
    import time
    child = tmp_path / "child.py"
    child.write_text("import sys; sys.exit(int(sys.argv[1]))\n")

    async def run_child():
        proc = await asyncio.create_subprocess_exec(PY, str(child), "2")
        return await proc.wait()

    returncode = asyncio.run(run_child())
    pid = os.posix_spawn(PY, [PY, str(child), "3"], dict(os.environ))
    waited = os.waitpid(pid, 0)
    time.sleep(0.5)
    log.stop()
    # THEN the script saw what it sees plain
    assert returncode == 2 and waited[0] == pid and os.waitstatus_to_exitcode(waited[1]) == 3
    # AND each child's end was seen when it was reaped, with its exit status
    by_status = {c["exit_status"]: c for c in log.to_meta()["python_children"]}
    assert set(by_status) == {2, 3}
    for recorded in by_status.values():
        assert recorded["ended"] is True and recorded["seconds"] < 0.5


def test_a_failed_wait_raises_as_without_dsprof(log):
    # WHEN the script waits for a process that is no child of its own
    with pytest.raises(ChildProcessError) as caught:
        __import__("os").waitpid(1, 0)
    # THEN the error's traceback holds no frame of dsprof's
    assert not any("dsprof" in f.filename
                   for f in traceback.extract_tb(caught.value.__traceback__))
    # AND after the script, os.waitpid is os's own again
    log.stop()
    assert type(__import__("os").waitpid).__name__ == "builtin_function_or_method"


def test_a_child_whose_end_was_seen_is_named_over_one_timed_to_the_scripts_end():
    # GIVEN a child reaped unseen, timed to the script's end, and one seen ending after 3 s
    meta = {"steps_source": "none", "python_children": [
        {"argv": [PY, "probe.py"], "seconds": 9.0, "ended": None, "exit_status": None},
        {"argv": [PY, "train.py"], "seconds": 3.0, "ended": True, "exit_status": 0}]}
    (note,) = python_child_notes(meta, None)
    # THEN the note names the child whose time is known
    assert "the longest (python train.py, 3.0 s, exit status 0)" in note
