"""The run's dsprof.log on a full disk: one line says so, then the log goes on to stderr only
(no logging traceback per message). A subprocess, because the file size limit is per process."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

_SCRIPT = """
import resource, signal, sys
from pathlib import Path
from dsprof import log
log.configure()
log.attach_file(Path(sys.argv[1]))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
for i in range(10):
    log.logger.warning("line %d %s", i, "x" * 40)
"""


def test_a_log_file_that_cannot_be_written_is_one_line_not_a_traceback_per_message(tmp_path):
    path = tmp_path / "dsprof.log"
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "could not write" in line]
    assert len(errors) == 1 and str(path) in errors[0]
    # every message still reached the terminal, and the file keeps what fit
    assert sum("[dsprof WARNING] line" in line for line in proc.stderr.splitlines()) == 10
    assert 0 < path.stat().st_size <= 200
