"""The command line itself: entry points, help, import with a progress bar."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from click.testing import CliRunner

from dsprof.cli import main
from tests.conftest import trace_dir
from tests.integration.helpers import dsprof


def test_console_script_is_installed():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert eps.get("dsprof") == "dsprof.cli:main"


def test_python_dash_m_dsprof():
    res = dsprof("--version")
    assert res.code == 0 and "dsprof" in res.stdout
    res = dsprof("run", "--help")
    assert res.code == 0 and "DSPROF_ACTIVE" in res.stdout


def test_import_dsprof_is_light():
    # importing dsprof must not import torch, Dash or any GPU library
    code = ("import sys, dsprof; bad = [m for m in ('torch', 'dash', 'pynvml', 'cupti', 'duckdb')"
            " if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_with_progress_bar(tmp_path):
    folder = trace_dir("hta_sampled_2rank_nccl")
    res = CliRunner().invoke(main, ["import", "--progress", str(folder), "-o",
                                    str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "imported 9,575 events from 2 file(s), 2 rank(s)" in res.output
    assert (tmp_path / "run" / "tables" / "kernels" / "rank1.parquet").exists()


def test_import_default_output_goes_to_runs_dir(tmp_path):
    res = dsprof("import", str(trace_dir("hta_inference_tiny")), cwd=tmp_path)
    assert res.code == 0, res.stderr
    runs = list((tmp_path / "dsprof-runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("hta_inference_tiny-")
    assert res.stdout.strip() == str(runs[0].relative_to(tmp_path))
