"""``dsprof dashboard`` and ``dsprof run --dashboard`` as a user runs them: served on
127.0.0.1, answering HTTP, stopped by Ctrl-C; bad input is one line and status 2."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from dsprof.ingest.importer import import_traces
from tests.conftest import trace_dir
from tests.integration.helpers import REPO, dsprof

pytestmark = pytest.mark.slow


def serve(args: list[str], timeout: float = 120) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dsprof", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        m = re.search(r"dsprof dashboard: (http://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("no dashboard address printed:\n" + "".join(seen))


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    finally:
        proc.kill()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        return resp.read().decode()


def test_dashboard_serves_a_run_on_localhost(tmp_path):
    # GIVEN an imported trace
    run, _ = import_traces([trace_dir("hta_inference_tiny")], tmp_path / "run")
    # WHEN served on a free port
    proc, url = serve(["dashboard", str(run.path), "--port", "0"])
    try:
        # THEN it listens on 127.0.0.1 only and serves the app and its layout
        assert url.startswith("http://127.0.0.1:")
        assert "_dash-config" in get(url)
        assert "Overview" in get(url + "_dash-layout")
    finally:
        code = stop(proc)
    assert code == 0


def test_dashboard_bad_input_is_one_line(tmp_path):
    res = dsprof("dashboard", str(tmp_path / "nope"))
    assert res.code == 2 and res.stderr.startswith("dsprof: error:")
    assert "Traceback" not in res.stderr
    run, _ = import_traces([trace_dir("hta_inference_tiny")], tmp_path / "run")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = dsprof("dashboard", str(run.path), "--port", str(busy.getsockname()[1]))
    assert res.code == 2 and "cannot serve the dashboard" in res.stderr
    assert "Traceback" not in res.stderr


def test_run_dashboard_serves_the_new_run(tmp_path):
    # WHEN a script is profiled with --dashboard
    proc, url = serve(["run", "--dashboard", "--dashboard-port", "0", "-o", str(tmp_path / "r"),
                       str(REPO / "examples" / "mlp.py"), "--steps", "3", "--hidden", "64"])
    try:
        # THEN its dashboard is served once the run is written
        assert (tmp_path / "r" / "tables").is_dir()
        assert "r" in get(url + "_dash-layout")
    finally:
        code = stop(proc)
    assert code == 0  # the script's own status


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None,
                    reason="pandas is not installed: pyarrow has nothing to import lazily")
def test_pandas_is_whole_before_the_dashboard_serves(tmp_path):
    # GIVEN pandas installed, which pyarrow imports at the background load's first numpy
    # conversion while plotly's JSON encoder of a first request reads it from sys.modules
    run, _ = import_traces([trace_dir("hta_inference_tiny")], tmp_path / "run")
    probe = ("import sys\n"
             "from dsprof.dashboard.app import create_app\n"
             "create_app(sys.argv[1])\n"
             "pandas = sys.modules.get('pandas')\n"
             "print(pandas is not None and hasattr(pandas, 'NaT'))\n")
    # WHEN the app is built (the background load has started)
    res = subprocess.run([sys.executable, "-c", probe, str(run.path)], capture_output=True,
                         text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    # THEN pandas is already whole: no request can find it half imported (HTTP 500)
    assert res.stdout.strip() == "True", res.stderr[-2000:]
