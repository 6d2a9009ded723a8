"""The interpreter's options of a run (meta.json ``interpreter_options``) and what ``dsprof
verify`` gives back of them: Python's own options from an allow-list, never a word that runs or
loads something (a run directory is data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsprof.apply.verify import rerun_command
from dsprof.interpreter_options import allowed, split_orig_argv
from dsprof.rundir import RunDir

TARGET = {"kind": "script", "name": "train.py", "argv": ["train.py", "--steps", "40"]}
OWN = ["run", "-o", "r", "train.py"]


@pytest.mark.parametrize(("orig", "flags"), [
    (["python", "-W", "error", "-X", "dev", "-m", "dsprof", *OWN],
     ["python", "-W", "error", "-X", "dev"]),
    (["python", "-O", "-mdsprof", *OWN], ["python", "-O"]),
    (["python", "-Im", "dsprof", *OWN], ["python", "-I"]),
    (["python", "-B", "/venv/bin/dsprof", *OWN], ["python", "-B"]),
    (["python", "-c", "import dsprof.cli", *OWN[1:]], None),  # dsprof called from Python
])
def test_the_interpreters_options_are_what_comes_before_dsprofs_entry(orig, flags):
    assert split_orig_argv(orig, OWN) == flags


def test_pythons_own_options_are_given_back_as_one_word_each():
    # GIVEN the options of runs made with -W, -X and flags, in both spellings
    recorded = ["-W", "error", "-Wignore::DeprecationWarning", "-X", "dev", "-Xutf8=1",
                "-X", "int_max_str_digits=640", "-O", "-OO", "-B", "-u", "-E", "-s", "-I",
                "-P", "-b", "-bb", "-R", "-Es", "-W", "e:some message:UserWarning:torch.*:12"]
    # THEN each is kept, -W and -X joined to their value
    assert allowed(recorded) == [
        "-Werror", "-Wignore::DeprecationWarning", "-Xdev", "-Xutf8=1",
        "-Xint_max_str_digits=640", "-O", "-OO", "-B", "-u", "-E", "-s", "-I", "-P", "-b",
        "-bb", "-R", "-Es", "-We:some message:UserWarning:torch.*:12"]


@pytest.mark.parametrize("word", [
    ["-c", "import os; os.system('x')"],  # code
    ["-m", "evil"], ["-mevil"], ["-Im"],  # a module to run
    ["-W", "error::evil.Warning"],  # a dotted category: warnings imports its module
    ["-X", "presite=evil"], ["-X", "pycache_prefix=/tmp/x"], ["-X", "unknown_option"],
    ["-X", "dev=a/b"], ["-W", "run"], ["-W", "error;rm"],
    ["evil.py"], ["--"], ["-"], ["--help"], ["-V"], ["-i"], ["-d"],
])
def test_anything_else_is_dropped(word):
    assert allowed(["-B", *word]) == ["-B"]


def test_a_refused_value_is_not_read_as_an_option():
    # `-W -c`: -W's value is "-c" (refused), not an option of its own
    assert allowed(["-W", "-c", "-O"]) == ["-O"]


@pytest.mark.parametrize("recorded", [None, "-O", {"-O": 1}, ["-O", 3], ["-O"] * 65])
def test_a_record_that_is_not_a_list_of_words_gives_nothing(recorded):
    assert allowed(recorded) == []


def _run(tmp_path: Path, **meta) -> Path:
    run = RunDir.create(tmp_path / "run")
    run.write_meta({"source": "run", "status": "finished", "cwd": str(tmp_path),
                    "target": TARGET, "settings": {"wait": 5}, **meta})
    return run.path


def test_the_rerun_starts_python_with_the_runs_options_before_dsprof(tmp_path):
    # GIVEN a run made as `python -W error -X dev -m dsprof run ...`, and one whose record
    # asks for code
    base = _run(tmp_path, interpreter_options=["-W", "error", "-X", "dev", "-c", "1"])
    cmd, _, _ = rerun_command(base, None, tmp_path / "new")
    # THEN the rerun's interpreter gets the options, not the code
    assert cmd[1:6] == ["-Werror", "-Xdev", "-m", "dsprof", "run"]
    assert cmd[-4:] == ["--", "train.py", "--steps", "40"]
    # AND a run recorded without them reruns as before
    cmd, _, _ = rerun_command(_run(tmp_path / "old"), None, tmp_path / "new")
    assert cmd[1:4] == ["-m", "dsprof", "run"]
