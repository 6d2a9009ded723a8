"""The GPU acceptance entry point on a machine without CUDA (CI): it runs, every check is
SKIPPED with the reason, it exits 0; and the examples that take ``--device`` refuse a GPU they
do not have in one line."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import EXAMPLES, REPO
from tests.integration.helpers import dsprof

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="a CUDA device is present: the dry run is for CPU CI")


def _gpu_tests() -> list[str]:
    names = []
    for path in sorted((REPO / "tests" / "gpu").glob("test_*.py")):
        names += [n.name for n in ast.parse(path.read_text()).body
                  if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    return names


def test_acceptance_dry_run_skips_every_check_with_the_reason(tmp_path):
    # GIVEN a machine without CUDA and the project's packages installed
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    # WHEN the one entry point runs
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_acceptance.sh")], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    # THEN it exits 0 and prints one SKIPPED row per GPU test, each with the reason
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("dsprof GPU acceptance on no CUDA device")
    rows = [line for line in lines if "SKIPPED" in line]
    assert len(rows) == len(_gpu_tests()) >= 11
    assert all("torch.cuda.is_available() is False" in row for row in rows)
    assert not any(" PASS " in line or " FAIL " in line for line in lines)
    # AND the report is written under $OUT
    report = (tmp_path / "gpu-acceptance.txt").read_text()
    assert report.count("SKIPPED") == len(rows)
    assert (tmp_path / "gpu-acceptance.jsonl").read_text().count('"SKIPPED"') == len(rows)


def test_acceptance_without_project_packages_fails_in_one_line(tmp_path):
    # GIVEN a Python that lacks the project's packages and no wheels to install them from
    bare = tmp_path / "bare-python"
    bare.write_text("#!/bin/sh\nexec /usr/bin/env python3 -I -S \"$@\"\n")
    bare.chmod(0o755)
    copy = tmp_path / "repo"
    (copy / "benchmarks").mkdir(parents=True)
    script = (REPO / "benchmarks" / "gpu_acceptance.sh").read_text()
    (copy / "benchmarks" / "gpu_acceptance.sh").write_text(script)
    # WHEN the entry point runs with it
    proc = subprocess.run(["bash", str(copy / "benchmarks" / "gpu_acceptance.sh")],
                          env={**os.environ, "PYTHON": str(bare)}, capture_output=True,
                          text=True, timeout=60, check=False)
    # THEN one line names what is missing and where the wheels go, and the status is 2
    assert proc.returncode == 2
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(out) == 1 and out[0].startswith("gpu_acceptance: missing Python packages:")
    assert "torch" in out[0] and ".whl/" in out[0]


@pytest.mark.parametrize("example", ["sync_in_loop.py", "transformer_lm.py"])
def test_examples_refuse_cuda_without_a_gpu_in_one_line(example):
    # GIVEN a CPU-only machine; WHEN an example is asked for --device cuda
    proc = subprocess.run([sys.executable, str(EXAMPLES / example), "--device", "cuda",
                           "--steps", "1"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    # THEN it stops with one line saying why, exit status 2, and no traceback
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"{example}: --device cuda: no CUDA device here "
                                   "(torch.cuda.is_available() is False); use --device cpu")


def test_refused_device_keeps_its_exit_status_under_dsprof(tmp_path):
    # WHEN the refusing example runs under dsprof
    res = dsprof("run", "-o", str(tmp_path / "run"), str(EXAMPLES / "sync_in_loop.py"),
                 "--device", "cuda")
    # THEN the script's exit status and its one line come through
    assert res.code == 2, res.stderr
    assert "sync_in_loop.py: --device cuda: no CUDA device here" in res.stderr
    assert "Traceback" not in res.stderr
