"""``dsprof verify`` reruns a multi-rank run the way its ranks were started: ``dsprof run
--nproc-per-node N`` again with N, the script that spawns its own ranks as it is, and a job of
the user's own launcher (torchrun) is not started by verify, which says what to type."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsprof.apply.verify import rerun_command
from dsprof.errors import ConfigError
from dsprof.rundir import RunDir

TARGET = {"kind": "script", "name": "train.py", "argv": ["train.py", "--steps", "40"]}


def _run(tmp_path: Path, **meta) -> Path:
    run = RunDir.create(tmp_path / "run")
    run.write_meta({"source": "run", "status": "finished", "cwd": str(tmp_path),
                    "target": TARGET, "settings": {"wait": 5}, **meta})
    return run.path


def test_a_run_of_dsprofs_launcher_is_rerun_with_its_ranks(tmp_path):
    base = _run(tmp_path, launcher="dsprof --nproc-per-node", nproc_per_node=2, world_size=2)
    cmd, _, _ = rerun_command(base, ["input-1"], tmp_path / "new")
    assert cmd[cmd.index("--nproc-per-node") + 1] == "2"
    assert cmd.index("--nproc-per-node") < cmd.index("--")
    assert cmd[-4:] == ["--", "train.py", "--steps", "40"]


@pytest.mark.parametrize("nproc", ["2; rm -rf /", -1, True, None])
def test_a_count_that_is_not_one_starts_no_ranks(tmp_path, nproc):
    # a run directory is data: only a positive integer becomes a word of the command
    base = _run(tmp_path, launcher="dsprof --nproc-per-node", nproc_per_node=nproc)
    cmd, _, _ = rerun_command(base, None, tmp_path / "new")
    assert "--nproc-per-node" not in cmd and not any("rm" in c for c in cmd)


def test_a_script_that_spawns_its_ranks_is_rerun_as_it_is(tmp_path):
    base = _run(tmp_path, launcher="torch.multiprocessing.spawn", world_size=2)
    cmd, _, _ = rerun_command(base, None, tmp_path / "new")
    assert "--nproc-per-node" not in cmd and cmd[-3:] == ["train.py", "--steps", "40"]


def test_a_job_of_the_users_launcher_is_not_started_and_the_command_is_given(tmp_path):
    base = _run(tmp_path, launcher="torchrun", world_size=4)
    with pytest.raises(ConfigError) as err:
        rerun_command(base, ["input-1"], tmp_path / "new")
    text = str(err.value)
    assert "cannot start again" in text
    assert (f"torchrun ... -m dsprof run -o {tmp_path / 'new'} --apply input-1 --baseline "
            f"{base} -- train.py --steps 40") in text
    assert f"dsprof diff {base} {tmp_path / 'new'}" in text


@pytest.mark.parametrize(("meta", "command"), [
    ({"launcher": "dsprof --nproc-per-node", "nproc_per_node": 2, "world_size": 2},
     "dsprof run --nproc-per-node 2 train.py --steps 40"),
    # the script spawns its ranks: --nproc-per-node would start 2 copies, each spawning 2
    ({"launcher": "torch.multiprocessing.spawn", "world_size": 2},
     "dsprof run train.py --steps 40"),
    ({"launcher": "torchrun", "world_size": 16}, "torchrun ... -m dsprof run train.py --steps 40"),
    ({"world_size": 4}, "dsprof run --nproc-per-node 4 train.py --steps 40"),
])
def test_a_multi_rank_finding_reruns_the_job_as_its_ranks_were_started(meta, command):
    from dsprof.analyzers.registry import Context
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import steps

    run = Run.from_tables(meta={"source": "run", "target": TARGET, **meta},
                          steps=steps([1.0]))
    assert Context(run).ranks_command == command
