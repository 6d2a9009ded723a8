"""``dsprof import`` loads the parser (pyarrow, numpy) only once its inputs are known to exist
(issue 16): a wrong path is refused in the interpreter's time, and the parse still works."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO
from tests.unit.test_cli_startup import _modules_after


def test_the_import_command_module_loads_no_parser():
    # the command's module and the importer's checks need none of the parser's libraries
    # (orjson reads trace headers; rich prints the result)
    loaded = _modules_after("import dsprof.cli.import_cmd; import dsprof.ingest.importer")
    assert loaded <= {"orjson", "rich"}


def test_a_missing_path_is_refused_before_the_parser_loads(tmp_path):
    # GIVEN a path that does not exist
    missing = tmp_path / "nope.json.gz"
    # WHEN it is imported, the process reporting what it loaded at exit
    probe = ("import sys, atexit, json\n"
             "atexit.register(lambda: print(json.dumps([m for m in ('pyarrow', 'numpy', "
             "'duckdb') if m in sys.modules]), file=sys.stderr))\n"
             "from dsprof.cli import main\n"
             "main(['import', '-o', sys.argv[1], sys.argv[2]])\n")
    res = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "run"), str(missing)],
                         capture_output=True, text=True, cwd=REPO, check=False,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})
    # THEN one clear line, exit 2, and no pyarrow, numpy or DuckDB was loaded for it
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert "no such file or folder" in lines[0]
    assert lines[-1] == "[]"
    assert not (tmp_path / "run").exists()


def test_dsprof_step_without_a_session_loads_no_torch():
    # a script may call dsprof.step() before its own import torch (or run without dsprof):
    # with no session there is nothing to mark, and loading torch here would load it before
    # the script does (collectors/torch_arrival.py)
    assert _modules_after("import dsprof; dsprof.step()") == set()
