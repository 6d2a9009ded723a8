"""``sys.orig_argv`` as plain python gives the script (dsprof/launch.py)."""

from __future__ import annotations

import sys

import pytest

from dsprof.launch import Target, _orig_argv_for

SCRIPT = Target("script", "train.py", ("--lr", "0.1"))
MODULE = Target("module", "pkg.train", ("-o", "out.pt"))
OWN = ["run", "-q", "-o", "RUN"]


@pytest.mark.parametrize(("dsprof_orig", "target", "plain"), [
    # the dsprof command, with interpreter flags where its shebang had none
    (["/venv/bin/python3", "/venv/bin/dsprof"], SCRIPT,
     ["/venv/bin/python3", "train.py", "--lr", "0.1"]),
    (["python", "-X", "utf8", "-m", "dsprof"], SCRIPT,
     ["python", "-X", "utf8", "train.py", "--lr", "0.1"]),
    (["python", "-mdsprof"], MODULE, ["python", "-m", "pkg.train", "-o", "out.pt"]),
    (["python", "-Im", "dsprof"], MODULE, ["python", "-I", "-m", "pkg.train", "-o", "out.pt"]),
])
def test_the_script_gets_the_interpreter_and_its_flags_then_its_own_command(
        monkeypatch, dsprof_orig, target, plain):
    # GIVEN dsprof started as the process's command line, by its command or python -m
    monkeypatch.setattr(sys, "argv", ["/anywhere/dsprof", *OWN, "--", target.name,
                                      *target.args])
    monkeypatch.setattr(sys, "orig_argv", [*dsprof_orig, *sys.argv[1:]])
    # THEN the script's orig_argv is python's own for it: the flags kept, dsprof's command
    # gone (it was dsprof's: a script re-running itself re-ran dsprof, which refused its
    # run directory)
    assert _orig_argv_for(target) == plain


def test_a_command_line_that_is_not_dsprofs_is_left_as_it_is(monkeypatch):
    # GIVEN dsprof's command called from Python (a test), its argv no tail of the process's
    monkeypatch.setattr(sys, "argv", ["dsprof", *OWN, "train.py"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "pytest", "-q"])
    # THEN orig_argv is not rewritten from it
    assert _orig_argv_for(SCRIPT) == ["python", "-m", "pytest", "-q"]
