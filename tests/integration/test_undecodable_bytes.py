"""A script given bytes that are not UTF-8 (an argument, its working directory) runs under
dsprof with those bytes, and its run is recorded (dsprof/undecodable.py)."""

from __future__ import annotations

import os

import pytest

from tests.integration.helpers import dsprof, meta, plain, write

pytestmark = pytest.mark.slow

# 0xe9 (é in Latin-1) is no UTF-8: Python hands it to the script as the surrogate '\udce9'
CAFE = "caf\udce9"

SHOWS_ITS_BYTES = """
import os
import sys

import torch

print("argv", [os.fsencode(a) for a in sys.argv[1:]], "cwd", os.fsencode(os.getcwd())[-5:])
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(6):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
print("trained")
"""


def test_an_argument_and_a_working_directory_not_utf8_are_run_and_recorded(tmp_path):
    # GIVEN a script that prints the bytes of its arguments and working directory, run in a
    # directory named with byte 0xe9 and given an argument with it
    cwd = tmp_path / CAFE
    cwd.mkdir()
    script = write(cwd / "shows_bytes.py", SHOWS_ITS_BYTES)
    bare = plain(script, CAFE, cwd=cwd)
    assert bare.returncode == 0 and "b'caf\\xe9'" in bare.stdout, bare.stderr
    # WHEN it runs under dsprof
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), str(script), CAFE, cwd=cwd)
    # THEN it received the same bytes and printed the same (the session did not start:
    # "TypeError: str is not valid UTF-8: surrogates not allowed", and nothing was profiled)
    assert res.code == 0 and res.stdout == bare.stdout, res.stderr
    assert "[dsprof ERROR]" not in res.stderr, res.stderr
    # AND the run is recorded, those bytes shown as \xe9, its steps found
    m = meta(out)
    assert m["target"]["argv"][1:] == ["caf\\xe9"] and m["cwd"].endswith(os.sep + "caf\\xe9")
    assert m["status"] == "finished" and m["steps_source"] == "optimizer"
