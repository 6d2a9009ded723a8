"""README and ``--help`` agree: every ``dsprof run`` option is in the README's knob table, every
environment variable the README names is one dsprof reads, and each command has one row."""

from __future__ import annotations

import re

from dsprof.cli import main
from dsprof.cli.run import run_command
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _source() -> str:
    return "\n".join(p.read_text() for p in (REPO / "dsprof").rglob("*.py"))


def test_every_run_option_is_in_the_readme():
    knobs = README[README.index("## Knobs"):README.index("## Debugging")]
    missing = [opt for p in run_command.params for opt in p.opts
               if opt.startswith("--") and opt != "--help"
               and not re.search(r"(`|, )" + re.escape(opt) + r"[` ]", knobs)]
    assert missing == []


def test_every_environment_twin_the_readme_names_exists():
    src = _source()
    named = set(re.findall(r"`((?:DSPROF|DS)_[A-Z0-9_]+)", README))
    assert named, "the README names no environment variable"
    assert sorted(v for v in named if f'"{v}"' not in src and f"'{v}'" not in src) == []


def test_each_command_has_one_row():
    # (`run` has a row per way of calling it: -m, --nproc-per-node, --apply)
    for name in main.list_commands(None):  # type: ignore[arg-type]
        rows = [line for line in README.splitlines() if line.startswith(f"| `dsprof {name} ")]
        assert name == "run" or len(rows) == 1, (name, len(rows))
