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


def _ran_as_command_line(args: list[str], before: str = "") -> dict:
    """Run ``dsprof ARGS`` as a process's own command line (as the ``dsprof`` script does);
    what its atexit handlers saw: whether pandas was loaded, and the exit status."""
    probe = (
        "import atexit, json, sys\n"
        f"{before}\n"
        "seen = {}\n"
        "atexit.register(lambda: print(json.dumps({'pandas': sys.modules.get('pandas') "
        "is not None, **seen})))\n"
        f"sys.argv = ['dsprof', *{args!r}]\n"
        "from dsprof.cli import main\n"
        "try: main()\n"
        "except SystemExit as e: seen['code'] = e.code\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False,
                         cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tables(run_dir) -> dict:
    import pyarrow.parquet as pq

    return {p.relative_to(run_dir).as_posix(): pq.read_table(p)
            for p in sorted(run_dir.glob("tables/**/*.parquet"))}


def test_commands_on_runs_keep_pandas_out_and_write_the_same_tables(tmp_path):
    # GIVEN pandas installed (pyarrow imports it at its first array, ~0.2 s, when it can)
    pytest.importorskip("pandas")
    trace = trace_dir("hta_a100_alexnet_small") / "benchmark_result_493459_1694039959_trace.json.gz"
    # WHEN `dsprof import`, then `summary`, `gpu` and `analyze`, run as command lines
    seen = _ran_as_command_line(["import", "-o", str(tmp_path / "run"), str(trace)])
    # THEN pandas was never loaded
    assert seen == {"pandas": False}
    for command in (["summary", "--json"], ["gpu"], ["analyze"]):
        seen = _ran_as_command_line([*command, str(tmp_path / "run")])
        assert seen["pandas"] is False and seen.get("code") in (None, 0), (command, seen)
    # AND the tables are those written where pyarrow has pandas (the same command line
    # in a process that loaded pandas first: nothing to keep out)
    seen = _ran_as_command_line(["import", "-o", str(tmp_path / "with"), str(trace)],
                                before="import pandas")
    assert seen["pandas"] is True
    plain, kept_out = _tables(tmp_path / "with"), _tables(tmp_path / "run")
    assert plain.keys() == kept_out.keys() and len(plain) >= 4
    for name, table in plain.items():
        assert kept_out[name].equals(table), name


def test_pandas_is_kept_out_only_of_a_command_lines_own_process():
    from dsprof.cli import WITHOUT_PANDAS

    # a script runs in `dsprof run`'s process, and the dashboard plots with pandas
    assert {"run", "dashboard"}.isdisjoint(WITHOUT_PANDAS)
    # a caller's main([...]) (a test, a notebook) keeps its process as it was
    code = ("from dsprof.cli import main\n"
            "try: main(['summary', '/nonexistent-run'], standalone_mode=False)\n"
            "except Exception: pass\n"
            "from dsprof.without_pandas import NoPandas\n"
            "assert not [f for f in sys.meta_path if isinstance(f, NoPandas)]\n"
            "import pandas")
    pytest.importorskip("pandas")
    assert "pandas" in _modules_after(code)
