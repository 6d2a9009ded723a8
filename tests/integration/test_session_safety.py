"""The session under scripts that do ordinary but awkward things: a run read while it is written,
a fork, ``os.chdir``, their own torch.profiler, a full disk, SIGTERM while blocked in C, a
teardown that blocks. Real scripts under ``python -m dsprof run`` in subprocesses."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsprof.run import load
from tests.integration import safety_scripts as scripts
from tests.integration.helpers import REPO, dsprof, meta, write

pytestmark = pytest.mark.slow
SCHEDULE = ["--wait", "1", "--warmup", "1", "--active", "2", "--sample-ms", "0"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra})
    return env


def _start(args: list[str], cwd: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dsprof", "run", *args], cwd=cwd,
                            env=_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_a_running_run_is_read_only_and_ingested_once_at_the_end(tmp_path):
    # GIVEN a script that is still training (40 steps, 0.2 s each)
    script = write(tmp_path / "slow.py", scripts.SLOW)
    out, marker = tmp_path / "run", tmp_path / "step3"
    proc = _start(["-o", str(out), *SCHEDULE, str(script), "40", str(marker), "0.2"], tmp_path)
    try:
        _wait_for(marker, proc)
        # WHEN summary, analyze, memory and diff are pointed at it
        seen = [dsprof(*cmd) for cmd in (("summary", str(out)), ("analyze", str(out)),
                                          ("memory", str(out)), ("diff", str(out), str(out)))]
        still_running = proc.poll() is None
    finally:
        _, stderr = proc.communicate(timeout=240)
    # THEN each says it is still running, with its progress, in one line, and touches nothing
    assert still_running, "the script ended before the commands ran; slow it down"
    for res in seen:
        assert res.code == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "is still running" in lines[0], res.stderr
        assert "steps so far" in lines[0] and "Traceback" not in res.stderr
    # AND the run ends complete: ingested once, by its own process, with all 40 steps
    assert proc.returncode == 0, stderr
    m = meta(out)
    assert (m["status"], m["ingested"], m["steps_recorded"]) == ("finished", True, 40)
    res = dsprof("summary", "--json", "--findings", "0", str(out))
    assert res.code == 0, res.stderr
    # the full-speed steps (facts.py): setup, first calls and the steps dsprof's window
    # disturbed (warm-up, recorded, trace writing) are left out
    with load(out) as run:
        disturbed = run.sql("SELECT count(*) FROM steps WHERE disturbed OR step < 2")[0][0]
    assert 30 <= json.loads(res.stdout)["steps"]["count"] == 40 - disturbed


def test_a_killed_writer_leaves_a_readable_run_not_a_running_one(tmp_path):
    # GIVEN a process that holds a run's lock, killed with SIGKILL (no chance to clean up)
    from dsprof.rundir import RunDir
    from dsprof.runlock import running

    run = RunDir.create(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time; from dsprof.rundir import RunDir; "
                                "from dsprof.runlock import acquire; "
                                "lock = acquire(RunDir(sys.argv[1])); "
                                "print('held', flush=True); time.sleep(600)"), str(run.path)],
        env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        # THEN while it lives the run is running, with its pid
        live = running(run)
        assert live is not None and live.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # AND once it is dead the lock file left behind does not make the run "running"
    assert (run.path / ".dsprof.lock").exists()
    assert running(run) is None


def test_a_forked_child_is_not_the_session_and_dataloader_workers_are_unaffected(tmp_path):
    # GIVEN a script that forks a child (3 steps, sys.exit(3)) and then reads a DataLoader
    # with 2 fork workers
    script = write(tmp_path / "fork.py", scripts.FORK)
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), *SCHEDULE, str(script), cwd=tmp_path)
    # THEN the child's status is its own, the workers delivered every batch, one summary
    assert res.code == 0, res.stderr
    assert "child status 3" in res.stdout
    assert "loader total 120.0" in res.stdout  # 0 + 1 + ... + 15
    assert res.stderr.count("dsprof dashboard ") == 1, res.stderr  # one closing summary
    # AND the run holds the parent's steps only (6 before the fork, 4 batches after)
    m = meta(out)
    assert (m["status"], m["exit_status"], m["steps_recorded"]) == ("finished", 0, 10)


def test_forked_children_warn_nothing_about_dsprofs_log_file(tmp_path):
    # GIVEN the forking script (a forked child that exits, then 2 DataLoader workers), run
    # with every warning shown, as `python -X dev` or `-W default` show them
    script = write(tmp_path / "fork.py", scripts.FORK)
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), *SCHEDULE, str(script), cwd=tmp_path,
                 env={"PYTHONWARNINGS": "default"})
    # THEN it runs as before, and no child warns that dsprof's log file was left unclosed
    assert res.code == 0, res.stderr
    assert "loader total 120.0" in res.stdout
    assert "ResourceWarning" not in res.stderr, res.stderr
    # AND the parent's log goes on after its children dropped their copies of it: the last
    # batch's step (read from the workers) is in it
    assert "step 9:" in (out / "dsprof.log").read_text()


def test_a_script_that_changes_directory_keeps_its_run_and_its_exit_status(tmp_path):
    # GIVEN a script that chdirs before every step and exits 4, run with the default runs dir
    script = write(tmp_path / "hop.py", scripts.CHDIR)
    res = dsprof("run", *SCHEDULE, str(script), cwd=tmp_path)
    # THEN its exit status is its own and the run is where it started, complete
    assert res.code == 4, res.stderr
    assert "Traceback" not in res.stderr
    (run,) = (tmp_path / "dsprof-runs").iterdir()
    m = meta(run)
    assert (m["status"], m["exit_status"], m["steps_recorded"], m["ingested"]) == (
        "finished", 4, 8, True)


def test_the_scripts_own_torch_profiler_gets_its_trace_and_dsprof_steps_aside(tmp_path):
    # GIVEN a script with its own torch.profiler (schedule + tensorboard_trace_handler; it
    # starts after 3 steps) while dsprof's window records steps 3-5
    script = write(tmp_path / "own.py", scripts.OWN_PROFILER)
    out, logdir = tmp_path / "run", tmp_path / "tb"
    res = dsprof("run", "-o", str(out), "--wait", "1", "--warmup", "1", "--active", "3",
                 "--sample-ms", "0", str(script), str(logdir), cwd=tmp_path)
    # THEN it ends normally (not 139), and the user's trace is written and valid
    assert res.code == 0, res.stderr
    assert "profiled" in res.stdout
    (trace,) = logdir.glob("*.pt.trace.json")
    events = json.loads(trace.read_text())["traceEvents"]
    steps = {e["name"] for e in events if str(e.get("name", "")).startswith("ProfilerStep#")}
    assert steps == {"ProfilerStep#4", "ProfilerStep#5", "ProfilerStep#6", "ProfilerStep#7"}
    assert any(e.get("name") == "aten::addmm" for e in events)
    # AND meta.json says dsprof stepped aside, and every step is still timed
    m = meta(out)
    assert m["user_profiler"] == {"sessions": 1, "first_step": 3, "windows_cut": 1,
                                  "steps": [[3, 8]]}
    assert m["steps_recorded"] == 12 and m["status"] == "finished"
    # dsprof's window was closed before the script's profiler started; it had not recorded a
    # whole step yet (step 3 had just begun), so it is dropped, and dsprof takes its window
    # after the script's profiler stopped (--wait 1 from step 8: warm-up 10, recording 11-)
    assert [w["steps"][0] for w in m["windows"]] == [11]


def _fsize_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_keeps_the_exit_status_and_what_was_written(tmp_path):
    # GIVEN a file size limit of 16 KiB: meta.json and session.json fit, the profiler window's
    # trace does not (the process sees EFBIG as it would see ENOSPC)
    script = write(tmp_path / "slow.py", scripts.SLOW)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "dsprof", "run", "-o", str(out), *SCHEDULE, str(script), "8",
         str(tmp_path / "marker"), "0"], cwd=tmp_path, env=_env(), capture_output=True,
        text=True, timeout=240, preexec_fn=_fsize_limit(16 * 1024), check=False)
    # THEN the script's status is kept, with no traceback, and one line per file not written
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "could not write" in errors[0], proc.stderr
    assert "window-0.trace.json" in errors[0]
    # AND what was written is whole: meta.json says finished with every step; no temp files
    m = meta(out)
    assert (m["status"], m["exit_status"], m["steps_recorded"]) == ("finished", 0, 8)
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name
                 or (p.is_file() and p.stat().st_size == 0 and p.name != ".dsprof.lock")]
    assert leftovers == []


def test_sigterm_while_the_main_thread_is_blocked_in_c_saves_the_run(tmp_path):
    # GIVEN a script blocked forever in C (GIL released, signals do not interrupt it)
    script = write(tmp_path / "block.py", scripts.BLOCK_IN_C)
    out, marker = tmp_path / "run", tmp_path / "blocked"
    proc = _start(["-o", str(out), *SCHEDULE, str(script), "6", str(marker), "main"],
                  tmp_path, DSPROF_TERM_GRACE_S="1")
    _wait_for(marker, proc)
    time.sleep(0.3)
    # WHEN it gets SIGTERM
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    # THEN it ends with 143 soon after the grace period, its steps saved
    assert proc.returncode == 143, stderr
    assert time.monotonic() - t0 < 30
    m = meta(out)
    assert (m["status"], m["exit_reason"], m["steps_recorded"]) == ("finished", "terminated", 6)
    res = dsprof("summary", "--json", "--findings", "0", str(out))
    assert res.code == 0, res.stderr
    # (6 steps, all of them disturbed: the step time is the profiler's warm-up step's, step 2;
    # the window, its trace write and the first calls' step are left out)
    doc = json.loads(res.stdout)["steps"]
    assert (doc["rule"], doc["count"]) == ("profiler warm-up steps", 1), doc
    assert doc["count"] + len(doc["excluded"]) == 6


@pytest.mark.parametrize("where", ["atexit", "del"])
def test_a_teardown_that_blocks_finds_the_run_saved_and_sigterm_ends_it(tmp_path, where):
    # GIVEN a script whose teardown blocks forever in C: an atexit handler, or the destructor
    # of a global (dsprof used to drop the script's globals before saving the run, so such a
    # destructor blocked dsprof itself: nothing saved, and no SIGTERM handler could run)
    script = write(tmp_path / "block.py", scripts.BLOCK_IN_C)
    out = tmp_path / "run"
    proc = _start(["-o", str(out), *SCHEDULE, str(script), "6", "-", where], tmp_path)
    # THEN dsprof's work is done before the teardown: the run is saved, ingested and analysed
    # (once the findings are written, what is left before the teardown is the summary's print:
    # a process still there a second later is stuck in the script's teardown)
    deadline = time.monotonic() + 180
    while True:
        m = meta(out) if (out / "meta.json").exists() else {}
        if m.get("ingested") and (out / "findings.json").exists():
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run was never saved"
        time.sleep(0.2)
    assert (m["status"], m["steps_recorded"]) == ("finished", 6)
    time.sleep(1.0)
    assert proc.poll() is None  # stuck in the script's own teardown, as without dsprof
    # WHEN SIGTERM comes, THEN the process ends (SIGTERM does what it does without dsprof)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode in (-signal.SIGTERM, 143)
    assert dsprof("summary", "--findings", "0", str(out)).code == 0


def test_a_script_with_its_own_sigterm_handler_keeps_it(tmp_path):
    # GIVEN a script that installs its own SIGTERM handler (it exits 7)
    script = write(tmp_path / "own_term.py", scripts.OWN_SIGTERM)
    out, marker, handled = tmp_path / "run", tmp_path / "ready", tmp_path / "handled"
    proc = _start(["-o", str(out), *SCHEDULE, str(script), str(marker), str(handled)],
                  tmp_path, DSPROF_TERM_GRACE_S="1")
    _wait_for(marker, proc)
    # WHEN it gets SIGTERM
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    # THEN its handler ran and decided the exit status; dsprof's thread did not step in
    assert proc.returncode == 7, stderr
    assert handled.read_text() == str(int(signal.SIGTERM))
    assert "did not stop within" not in stderr
    m = meta(out)
    assert (m["status"], m["exit_status"], m["steps_recorded"]) == ("finished", 7, 4)


GLOBAL_DESTRUCTOR = """
import sys
class Log:
    def __init__(self, path):
        self.fh = open(path, "w")
    def __del__(self):  # what a logger or tracker does at exit: flush what it buffered
        self.fh.write("flushed by __del__")
        self.fh.close()
log = Log(sys.argv[1])
def helper():  # a function holds the globals in a cycle with the module's dict
    return log
helper()
"""


@pytest.mark.slow
def test_a_global_destructor_runs_at_exit_as_without_dsprof(tmp_path):
    # GIVEN a script whose global's __del__ flushes a file, which plain python runs at exit
    script = write(tmp_path / "logs.py", GLOBAL_DESTRUCTOR)
    plain = subprocess.run([sys.executable, str(script), str(tmp_path / "plain.txt")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert plain.returncode == 0 and (tmp_path / "plain.txt").read_text() == "flushed by __del__"
    # WHEN it runs under dsprof, as a script and as a module
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "r1"), str(script),
                 str(tmp_path / "dsprof.txt"), cwd=tmp_path)
    mod = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "r2"), "-m", "logs",
                 str(tmp_path / "module.txt"), cwd=tmp_path)
    # THEN the destructor ran there too, and the exit status is the script's
    assert res.code == 0 and mod.code == 0, res.stderr + mod.stderr
    assert (tmp_path / "dsprof.txt").read_text() == "flushed by __del__"
    assert (tmp_path / "module.txt").read_text() == "flushed by __del__"


OS_EXIT = """
import os
import sys

import torch

torch.manual_seed(0)
model = torch.nn.Linear(16, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(20):
    opt.zero_grad()
    model(torch.randn(8, 16)).pow(2).mean().backward()
    opt.step()
if os.fork() == 0:  # a forked child's os._exit is no session's end
    os._exit(0)
os.wait()
print("trained", flush=True)
with open("after.txt", "w") as f:
    f.write("written before os._exit")
os._exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("status", [0, 3])
def test_os_exit_in_the_script_saves_the_run_and_keeps_the_status(tmp_path, status):
    # GIVEN a script that trains 20 steps, then ends with os._exit (no atexit, no finally)
    script = write(tmp_path / "os_exit.py", OS_EXIT)
    out = tmp_path / "run"
    # WHEN profiled
    res = dsprof("run", "-q", "-o", str(out), str(script), str(status), cwd=tmp_path)
    # THEN it exits with the status it gave, its output and files are its own
    assert res.code == status, res.stderr
    assert res.stdout.strip() == "trained"
    assert (tmp_path / "after.txt").read_text() == "written before os._exit"
    # AND the run was saved first: finished, with every step's timing (before: "running" and
    # only the steps of the profiler window it had written)
    m = meta(out)
    assert (m["status"], m["exit_status"], m["exit_reason"]) == ("finished", status, "os._exit")
    assert m["steps_recorded"] == 20
    with load(out) as run:
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 20


WORKER_OPS = """
import os
import torch
from torch.utils.data import DataLoader, Dataset


def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


class InPlace(Dataset):
    # 10 in-place ops a sample on one tensor: no allocation, so no memory event; only the
    # ops themselves would be recorded by a profiler the worker inherited
    def __init__(self):
        self.x, self.one = torch.zeros(8), torch.ones(8)  # add_(1) would wrap a new scalar

    def __len__(self):
        return 24000

    def __getitem__(self, i):
        if i == 4000:
            self.start = rss_kb()
        for _ in range(10):
            self.x.add_(self.one)
        if i == len(self) - 1:
            print(f"worker grew {rss_kb() - self.start} kB", flush=True)
        return i


model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for batch in DataLoader(InPlace(), batch_size=2000, num_workers=1):
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
"""


def test_a_dataloader_worker_forked_while_recording_records_no_ops(tmp_path):
    # GIVEN a training loop whose DataLoader forks its worker at the first batch, inside the
    # bootstrap capture, and whose worker runs 200,000 small ops without allocating
    script = write(tmp_path / "worker_ops.py", WORKER_OPS)
    res = dsprof("run", "-o", str(tmp_path / "run"), *SCHEDULE, str(script), cwd=tmp_path)
    assert res.code == 0, res.stderr
    # THEN the worker's memory stays flat: the copied profiler records none of its ops (each
    # recorded op kept its event and shapes: the worker grew by tens of MB, without end)
    grew = int(res.stdout.split("worker grew ")[1].split()[0])
    assert grew < 4096, res.stdout
