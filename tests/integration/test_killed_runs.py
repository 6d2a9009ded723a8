"""``dsprof run --nproc-per-node``'s own process killed outright (the out-of-memory killer, a
scheduler's SIGKILL) while its ranks train: they die with it, nobody merges their records, and
the run's first read does (dsprof/late_ranks.py). Real gloo ranks under torch's elastic agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsprof.rundir import RunDir
from dsprof.runlock import rank_steps
from tests.conftest import EXAMPLES
from tests.integration.helpers import REPO, dsprof, meta

pytestmark = pytest.mark.slow
SCHEDULE = ["--wait", "1", "--warmup", "1", "--active", "2", "--sample-ms", "0"]



def _session_alive(sid: int) -> bool:
    """Whether a process of session ``sid`` (the launcher's and its ranks') still runs (a
    zombie waiting for whoever adopted it to reap it does not)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
                fields = stat[stat.rindex(b")") + 2:].split()
                if int(fields[3]) == sid and fields[0] != b"Z":
                    return True
            except (OSError, ValueError, IndexError):
                pass
    return False


def test_a_launcher_killed_mid_run_leaves_its_ranks_merged_as_killed_together(tmp_path):
    # GIVEN two DDP ranks under dsprof's launcher, training far longer than the test waits
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "dsprof", "run", "--nproc-per-node", "2", "-o", str(out),
         *SCHEDULE, str(EXAMPLES / "ddp_train.py"), "--steps", "100000"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        # past step 6: each rank has written its profiled window (steps 3 and 4)
        deadline = time.monotonic() + 240
        while min(rank_steps(RunDir(out), r) or 0 for r in (0, 1)) < 6:
            assert launcher.poll() is None, launcher.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the ranks did not reach step 6"
            time.sleep(0.2)
        # WHEN the launcher is killed outright
        launcher.kill()
        launcher.wait(timeout=30)
        # (its ranks die with it: PR_SET_PDEATHSIG; the run's lock goes with the last of them)
        deadline = time.monotonic() + 60
        while _session_alive(launcher.pid):
            assert time.monotonic() < deadline, "a rank outlived its launcher"
            time.sleep(0.2)
    finally:
        try:
            os.killpg(launcher.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        launcher.stderr.close()
    assert "rank_failures" not in meta(out)  # as the launcher left it
    # THEN the user's first read merges the ranks: both died, neither is named first (they
    # died together), and the run says it did not finish
    res = dsprof("summary", str(out))
    assert res.code == 0, res.stderr
    m = meta(out)
    assert (m["status"], m["coordinator_lost"], m["partial"]) == ("running", True, True)
    assert sorted(m["rank_failures"]) == ["0", "1"], m["rank_failures"]
    assert m["first_failure"] is None, m["rank_failures"]
    assert not any("after rank" in why for why in m["rank_failures"].values())
    assert "the run did not finish" in " ".join(res.stdout.split())
