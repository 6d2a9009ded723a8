"""``dsprof run ... -m MODULE ARGS``: the ARGS are the module's (dsprof/cli/module_args.py)."""

from __future__ import annotations

import pytest

from dsprof.cli.module_args import module_args_apart
from dsprof.cli.run import run_command


def _apart(*args: str) -> list[str]:
    return module_args_apart(run_command.params, list(args))


def test_what_follows_the_module_is_set_apart_from_dsprofs_options():
    # GIVEN dsprof's options, then -m MODULE and the module's own options (some are dsprof's
    # names too), a "--" among them
    # THEN a "--" after MODULE ends dsprof's options, the module's kept as given
    assert _apart("-q", "--wait", "1", "-m", "pkg.train", "-o", "out.pt", "-q", "--", "x") == \
        ["-q", "--wait", "1", "-m", "pkg.train", "--", "-o", "out.pt", "-q", "--", "x"]
    assert _apart("-mpkg.train", "-h") == ["-mpkg.train", "--", "-h"]
    assert _apart("-qm", "pkg.train", "--wait", "2") == ["-qm", "pkg.train", "--", "--wait", "2"]


@pytest.mark.parametrize("args", [
    ("-o", "-m", "script.py", "-m", "x"),  # -m as the run directory's name, then a script
    ("--output=-m", "script.py", "-m", "x"),
    ("-o-m", "script.py", "-m", "x"),
    ("script.py", "-m", "x"),  # the script's own -m: click parses nothing after the script
    ("--", "-m", "x"),
    ("-q", "-m"),  # no MODULE: click says so
])
def test_a_script_or_an_options_value_is_no_module(args):
    # GIVEN "-m" as an option's value, after the script, or with no module after it
    # THEN the arguments are left as they are
    assert _apart(*args) == list(args)
