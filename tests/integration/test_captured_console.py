"""A library that captures the console by replacing ``write`` on ``sys.stderr`` itself, as
wandb's console capture does (``wandb/sdk/lib/console_capture.py``: ``stream.write =
write_with_callbacks``, copying every line into the run's ``output.log``), captures what the
script prints and nothing of dsprof's: dsprof's closing lines go to the terminal. A script
that never undoes the capture (no ``wandb.finish()``) or crashes got dsprof's report in its
log file."""

from __future__ import annotations

import pytest

from tests.integration.helpers import dsprof, plain, write

CAPTURED = '''
import sys

import torch

log = open("captured.log", "w")


def capture(stream):
    original = stream.write

    def write(text):
        log.write(text)
        log.flush()
        return original(text)

    stream.write = write


capture(sys.stdout)
capture(sys.stderr)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(12):
    opt.zero_grad()
    loss = model(torch.randn(4, 8)).pow(2).mean()
    loss.backward()
    opt.step()
    print(f"step {step}")
    if step == int(sys.argv[1]):
        raise RuntimeError("diverged")
print("done", file=sys.stderr)
'''


@pytest.mark.parametrize("crash_at", ["-1", "10"])
def test_a_console_capture_gets_the_scripts_lines_and_none_of_dsprofs(tmp_path, crash_at):
    script = write(tmp_path / "captured.py", CAPTURED)
    (tmp_path / "plain").mkdir()
    (tmp_path / "profiled").mkdir()
    bare = plain(script, crash_at, cwd=tmp_path / "plain")
    res = dsprof("run", "-o", str(tmp_path / "run"), str(script), crash_at,
                 cwd=tmp_path / "profiled")
    # THEN the same exit status, and the captured log holds what the plain run's does
    assert res.code == bare.returncode == (1 if crash_at == "10" else 0)
    captured = (tmp_path / "profiled" / "captured.log").read_text()
    assert captured == (tmp_path / "plain" / "captured.log").read_text()
    assert "dsprof" not in captured
    # AND dsprof's report still reached the terminal
    assert "next: dsprof summary" in res.stderr
