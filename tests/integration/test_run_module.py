"""``dsprof run [OPTIONS] -m MODULE ARGS`` runs MODULE as ``python -m MODULE ARGS`` does: the
same arguments, globals, ``sys.path`` and exit-time ``__main__``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import dsprof, write

pytestmark = pytest.mark.slow


def _package(root: Path, **modules: str) -> None:
    pkg = root / "pkg"
    pkg.mkdir()
    write(pkg / "__init__.py", "")
    for name, text in modules.items():
        write(pkg / f"{name}.py", text)


def _plain_module(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


SHOWS_ARGV = """
import sys
print("args", sys.argv[1:])
"""


def test_the_modules_options_are_the_modules(tmp_path):
    # GIVEN a module that prints its arguments, given options that dsprof has too (-o, -q,
    # --wait, -h) and a "--"
    _package(tmp_path, show=SHOWS_ARGV)
    args = ["-o", "out.pt", "-q", "--wait", "2", "-h", "--", "x"]
    bare = _plain_module(tmp_path, "pkg.show", *args)
    assert bare.returncode == 0 and "'-o', 'out.pt'" in bare.stdout, bare.stderr
    # WHEN it runs under dsprof with dsprof's own options before -m
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), "-m", "pkg.show", *args,
                 cwd=tmp_path)
    # THEN it gets them all, as python -m gives them (out.pt became dsprof's run directory,
    # -q and --wait 2 were dsprof's, "--" was dropped, and -h printed dsprof's help)
    assert res.code == 0 and res.stdout == bare.stdout, res.stdout + res.stderr
    # AND the run is in dsprof's own -o
    assert (out / "meta.json").is_file() and not (tmp_path / "out.pt").exists()
