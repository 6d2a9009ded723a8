"""``dsprof run --nproc-per-node N``: one dsprof session per rank, started by torch's own
elastic launcher (what ``torchrun`` runs), all writing into one run directory.

This process is the coordinator: it creates the run directory and its ``meta.json``, starts
``python -m dsprof run SCRIPT ARGS`` N times through ``torch.distributed.launcher.api``'s
``elastic_launch`` (a c10d rendezvous on 127.0.0.1 at a free port, no restarts), with the
knobs passed down as their ``DSPROF_*`` variables, and waits. When the launcher returns,
every rank has ended: their records are merged into meta.json (a rank that crashed or was
killed makes the run ``partial``, with the rank and why: its exit code or signal as the
launcher saw it), and the caller ingests the run once. The exit status is the launcher's:
0 when every rank succeeded, 1 when one failed (what ``torchrun`` exits with).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dsprof import interpreter_options
from dsprof._version import __version__
from dsprof.launch import Target
from dsprof.log import logger
from dsprof.manifest import LAUNCHED_BY_DSPROF
from dsprof.ranks import (
    LAUNCHED_ENV,
    LAUNCHER_PID_ENV,
    RANK_INGEST_ENV,
    log_rank_failures,
    merge_ranks,
)
from dsprof.rundir import RunDir
from dsprof.settings import Settings
from dsprof.speed_env import speed_env


def child_env(settings: Settings, run: RunDir) -> dict[str, str]:
    """The knobs as environment variables for the rank sessions."""
    env: dict[str, str] = {}
    for name, var in Settings.env_names().items():
        value = getattr(settings, name)
        if value is None:
            continue
        env[var] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    # the ranks do not analyze (this process does, once), but when it will, each rank ingests
    # its own trace as soon as its script ends (RANK_INGEST_ENV, dsprof/ingest/own_rank.py)
    env.update({"DSPROF_OUTPUT": str(run.path.resolve()), "DSPROF_ANALYZE": "0",
                "DSPROF_QUIET": "1", LAUNCHED_ENV: "1", LAUNCHER_PID_ENV: str(os.getpid()),
                RANK_INGEST_ENV: "1" if settings.analyze else "0"})
    return env


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launch(settings: Settings, target: Target, run: RunDir, nproc: int,
           applied: dict[str, Any] | None = None) -> int:
    """Run the ranks; returns the launcher's exit status. meta.json is complete afterwards.
    ``applied``: the plan of ``--apply`` (its knobs are in the environment the ranks get)."""
    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    run.write_meta({
        "source": "run", "status": "running", "launcher": LAUNCHED_BY_DSPROF,
        "nproc_per_node": nproc, "world_size": nproc, "ranks": [],
        "dsprof_version": __version__, "torch_version": torch.__version__,
        "python_version": sys.version.split()[0], "pid": os.getpid(),
        "target": target.to_json(), "dsprof_argv": sys.argv, "cwd": os.getcwd(),
        "interpreter_options": interpreter_options.of_this_process(),  # verify's rerun's
        "settings": settings.knobs(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("DSPROF_", "DS_"))},
        "speed_env": speed_env(os.environ),  # the launcher's: what verify's rerun gets back
        "start_time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        **({"applied": applied} if applied is not None else {}),
    })
    env = child_env(settings, run)
    if nproc > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = "1"  # what torchrun does, so that N ranks do not oversubscribe
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", rdzv_configs={"timeout": 120},
        max_restarts=0, monitor_interval=0.1, local_addr="127.0.0.1")
    # each rank's interpreter gets the options this one was started with (python -W error -X
    # dev -m dsprof run --nproc-per-node N): the script runs as the same program on every rank
    args = [*interpreter_options.of_this_process(), "-m", "dsprof", "run"]
    args += ["-m", target.name] if target.kind == "module" else [target.name]
    args += list(target.args)
    failures: dict[int, int] = {}
    first: int | None = None
    status = 0
    logger.debug("launching %d ranks: %s %s", nproc, sys.executable, " ".join(args))
    with _environ(env):
        try:
            elastic_launch(config, sys.executable)(*args)
        except ChildFailedError as exc:
            status = 1
            failures = {int(rank): int(f.exitcode) for rank, f in exc.failures.items()}
            first = int(exc.get_first_failure()[0])
        except Exception as exc:  # noqa: BLE001 - a launcher failure ends the job like torchrun
            status = 1
            logger.error("torch's elastic launcher failed: %s: %s", type(exc).__name__, exc)
    merged = merge_ranks(run, nproc, failures, first)
    meta: dict[str, Any] = {**merged, "status": "finished", "exit_status": status,
                            "exit_reason": "exit" if status == 0 else "rank failed"}
    run.update_meta(**meta)
    log_rank_failures(merged)
    return status


