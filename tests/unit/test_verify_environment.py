"""``dsprof verify`` reruns with the run's own threads, allocator and compiler settings, not
the shell's it was typed in (dsprof/speed_env.py): a run made with ``OMP_NUM_THREADS=1`` and
verified from a shell without it was rerun on torch's 2 threads and "measured" a saving 8x
its price."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsprof.apply.verify import environment_said, rerun_command
from dsprof.rundir import RunDir
from dsprof.speed_env import rerun_env, speed_env

TARGET = {"kind": "script", "name": "train.py", "argv": ["train.py"]}


def _run(tmp_path: Path, **meta) -> Path:
    run = RunDir.create(tmp_path / "run")
    run.write_meta({"source": "run", "status": "finished", "cwd": str(tmp_path),
                    "target": TARGET, "settings": {}, **meta})
    return run.path


def test_a_run_records_its_speed_settings_set_or_not():
    rec = speed_env({"OMP_NUM_THREADS": "1", "TORCHINDUCTOR_FREEZING": "1", "HOME": "/root"})
    assert rec["OMP_NUM_THREADS"] == "1" and rec["TORCHINDUCTOR_FREEZING"] == "1"
    assert "MKL_NUM_THREADS" in rec and rec["MKL_NUM_THREADS"] is None  # unset, recorded so
    assert "HOME" not in rec


def test_the_rerun_gets_the_runs_threads_back(tmp_path, monkeypatch):
    # GIVEN a run made on one thread, verified from a shell with no thread setting
    base = _run(tmp_path, speed_env=speed_env({"OMP_NUM_THREADS": "1"}))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _, _, env = rerun_command(base, None, tmp_path / "new")
    # THEN the rerun has it, and verify says so
    assert env["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS=1" in (environment_said(base) or "")


def test_what_the_run_did_not_have_is_unset_in_the_rerun(tmp_path, monkeypatch):
    # GIVEN a run made with torch's default threads and no inductor setting, verified from a
    # shell that has both
    base = _run(tmp_path, speed_env=speed_env({}))
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE", "1")
    monkeypatch.setenv("MY_SETTING", "kept")
    _, _, env = rerun_command(base, None, tmp_path / "new")
    assert "OMP_NUM_THREADS" not in env and "TORCHINDUCTOR_MAX_AUTOTUNE" not in env
    assert env["MY_SETTING"] == "kept"  # the rest of the shell is the rerun's
    said = environment_said(base) or ""
    assert "OMP_NUM_THREADS unset" in said and "TORCHINDUCTOR_MAX_AUTOTUNE unset" in said


def test_a_run_before_the_record_reruns_in_the_shells_environment(tmp_path, monkeypatch):
    base = _run(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    _, _, env = rerun_command(base, None, tmp_path / "new")
    assert env["OMP_NUM_THREADS"] == "3" and environment_said(base) is None


def test_nothing_that_loads_code_is_given_back():
    # GIVEN a run directory whose speed record names libraries to load and paths
    recorded = {"OMP_NUM_THREADS": "1", "OMP_TOOL_LIBRARIES": "libevil.so",
                "NCCL_NET_PLUGIN": "evil", "TORCHINDUCTOR_CACHE_DIR": "x",
                "MALLOC_CONF": "/tmp/evil", "LD_PRELOAD": "/tmp/evil.so", "NCCL_ALGO": "Ring"}
    env = rerun_env({"PATH": "/usr/bin"}, recorded)
    # THEN only the settings come back
    assert env == {"PATH": "/usr/bin", "OMP_NUM_THREADS": "1", "NCCL_ALGO": "Ring"}
    assert "LD_PRELOAD" not in speed_env({"LD_PRELOAD": "/usr/lib/libjemalloc.so"})
    # AND the shell's own such variable stays as it is
    shell = {"NCCL_NET_PLUGIN": "aws-ofi", "OMP_NUM_THREADS": "4"}
    assert rerun_env(shell, recorded) == {"NCCL_NET_PLUGIN": "aws-ofi", "OMP_NUM_THREADS": "1",
                                          "NCCL_ALGO": "Ring"}


@pytest.mark.parametrize("recorded", [
    "OMP_NUM_THREADS=1", ["OMP_NUM_THREADS"], {"OMP_NUM_THREADS": 1},
    {"PATH": "/evil", "LD_LIBRARY_PATH": "/evil", "HOME": "/evil"},
    {"OMP_NUM_THREADS": "1\0"}, {"OMP_NUM_THREADS": "x" * 5000},
])
def test_a_record_that_is_not_one_changes_nothing_it_should_not(recorded):
    # a run directory is data: only the speed settings, as strings, are given back
    shell = {"PATH": "/usr/bin", "HOME": "/root", "OMP_NUM_THREADS": "2"}
    assert rerun_env(shell, recorded) == shell
