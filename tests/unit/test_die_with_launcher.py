"""dsprof/ranks.py's die_with_launcher: a rank started by ``dsprof run --nproc-per-node`` dies
with its launcher; any other process (not its child) is left alone. The SIGKILL of a real
launcher is tests/integration/test_ranks.py."""

from __future__ import annotations

import os
import sys


def test_only_a_child_of_the_launcher_dies_with_it(monkeypatch):
    import subprocess as sp

    from dsprof.ranks import LAUNCHER_PID_ENV, die_with_launcher

    # a process whose parent is not the launcher (the launcher runs: this test's process is
    # its stand-in, the child's parent is a shell it started) keeps running: no death signal
    code = ("import os, sys; from dsprof.ranks import die_with_launcher; "
            "print(die_with_launcher()); sys.stdout.flush()")
    env = {**os.environ, LAUNCHER_PID_ENV: str(os.getpid()), "PYTHONPATH": os.getcwd()}
    direct = sp.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                    check=True)
    assert direct.stdout.strip() == "True"
    nested = sp.run(["sh", "-c", f'"{sys.executable}" -c "{code}"; true'], env=env,
                    capture_output=True, text=True, check=True)
    assert nested.stdout.strip() == "False"
    # outside dsprof's launcher: nothing to do
    monkeypatch.delenv(LAUNCHER_PID_ENV, raising=False)
    assert die_with_launcher() is False
