"""``dsprof run [OPTIONS] -m MODULE ARGS`` runs MODULE as ``python -m MODULE ARGS`` does: the
same arguments, globals, ``sys.path`` and exit-time ``__main__``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import REPO, dsprof, write

pytestmark = pytest.mark.slow


def _package(root: Path, **modules: str) -> None:
    pkg = root / "pkg"
    pkg.mkdir()
    write(pkg / "__init__.py", "")
    for name, text in modules.items():
        write(pkg / f"{name}.py", text)


def _plain_module(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})  # the path dsprof's runs get
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
    res = dsprof("run", "-q", "--no-analyze", "--no-analyze", "-o", str(out), "-m", "pkg.show", *args,
                 cwd=tmp_path)
    # THEN it gets them all, as python -m gives them (out.pt became dsprof's run directory,
    # -q and --wait 2 were dsprof's, "--" was dropped, and -h printed dsprof's help)
    assert res.code == 0 and res.stdout == bare.stdout, res.stdout + res.stderr
    # AND the run is in dsprof's own -o
    assert (out / "meta.json").is_file() and not (tmp_path / "out.pt").exists()


AT_EXIT = """
import atexit
import pickle
import sys

import torch


class Head(torch.nn.Module):  # a class of __main__'s when run with -m
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.lin(x)


head = Head()


def on_exit():
    # what an atexit handler of the module sees: its argv, and its classes in __main__
    print("argv at exit", [a.rsplit("/", 1)[-1] for a in sys.argv],
          "main is the module:", sys.modules["__main__"].__dict__ is globals())
    print("pickled at exit", len(pickle.dumps(head)) > 0)


atexit.register(on_exit)
opt = torch.optim.SGD(head.parameters(), lr=0.1)
for _ in range(3):
    head(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
print("trained")
"""


def test_the_modules_atexit_handlers_see_its_argv_and_main(tmp_path):
    # GIVEN a module whose atexit handler reads sys.argv and pickles a class of its own
    _package(tmp_path, at_exit=AT_EXIT)
    bare = _plain_module(tmp_path, "pkg.at_exit", "--flag")
    assert bare.returncode == 0 and "pickled at exit True" in bare.stdout, bare.stderr
    # WHEN it runs under dsprof -m
    res = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "run"), "-m", "pkg.at_exit", "--flag",
                 cwd=tmp_path)
    # THEN it sees what it sees without dsprof: its argv[0] its file, its module __main__
    # (argv[0] was 'pkg.at_exit', and pickling failed: "attribute lookup Head on __main__
    # failed")
    assert res.code == 0 and res.stdout == bare.stdout, res.stdout + res.stderr
    assert "['at_exit.py', '--flag'] main is the module: True" in res.stdout
    assert "Exception ignored" not in res.stderr


MAIN_GLOBALS = """
import sys

__builtins__.print("through __builtins__")
print(type(__builtins__).__name__, sorted(k for k in globals() if k.startswith("__")))
print("path", sys.path[:2])
"""


def test_the_module_runs_with_the_globals_and_path_python_m_gives_it(tmp_path):
    # GIVEN a module that uses __builtins__ (a module in __main__, a dict elsewhere), lists
    # its globals and prints the head of sys.path
    _package(tmp_path, main_globals=MAIN_GLOBALS)
    bare = _plain_module(tmp_path, "pkg.main_globals")
    assert bare.returncode == 0 and "through __builtins__" in bare.stdout, bare.stderr
    # WHEN it runs under dsprof's own command, whose sys.path[0] is its entry script's folder
    entry = Path(sys.executable).parent / "dsprof"
    if not entry.is_file():
        pytest.skip(f"no dsprof command beside {sys.executable}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    res = subprocess.run([str(entry), "run", "-q", "-o", str(tmp_path / "run"), "-m",
                          "pkg.main_globals"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    # THEN it prints what it prints without (__builtins__ was the dict: AttributeError on
    # __builtins__.print; __annotations__ was missing; sys.path[1] was dsprof's <venv>/bin)
    assert res.returncode == 0 and res.stdout == bare.stdout, res.stdout + res.stderr
