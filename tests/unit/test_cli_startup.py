"""Start-up cost: ``dsprof --help`` and the public API import none of the heavy libraries, and
commands that only read a run never import torch (issue 16)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, trace_dir

HEAVY = ("pyarrow", "duckdb", "numpy", "torch", "rich", "pandas", "orjson")


def _modules_after(code: str, *args: str) -> set[str]:
    """The heavy modules loaded in a fresh interpreter after ``code`` ran."""
    probe = (f"import sys\n{code}\n"
             f"print(__import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                         cwd=REPO, check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_dsprof_cli_imports_no_heavy_library():
    assert _modules_after("import dsprof.cli") == set()


def test_import_dsprof_public_api_imports_no_heavy_library():
    assert _modules_after("import dsprof; dsprof.profile; dsprof.step; dsprof.load") == set()


def test_help_lists_every_command_without_loading_one():
    code = ("import contextlib, io\nfrom dsprof.cli import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    try: main(['--help'])\n"
            "    except SystemExit: pass\n"
            "assert 'summary' in buf.getvalue() and 'import' in buf.getvalue(), buf.getvalue()")
    assert _modules_after(code) == set()


def test_listed_help_matches_each_commands_own_docstring():
    import click

    from dsprof.cli import COMMANDS, main

    ctx = click.Context(main)
    for name, (_module, _attr, listed) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(10**6).startswith(listed), name


@pytest.mark.parametrize("command", ["summary", "gpu", "analyze"])
def test_commands_that_read_a_run_never_import_torch(command, tmp_path):
    from dsprof.ingest.importer import import_traces

    # one file: the folder holds two unrelated rank-0 traces, which import refuses together
    trace = trace_dir("hta_a100_alexnet_small") / "benchmark_result_493459_1694039959_trace.json.gz"
    run, _ = import_traces([trace], tmp_path / "run")
    code = ("from dsprof.cli import main\n"
            f"try: main([{command!r}, sys.argv[1]], standalone_mode=False)\n"
            "except SystemExit: pass")
    loaded = _modules_after(code, str(run.path))
    assert "duckdb" in loaded  # the command did read the run
    assert "torch" not in loaded
