"""meta.json is data: a value of a type dsprof never writes there reads as absent, and every
command goes on without it (or stops with one line), never with a traceback. The values are
those a fuzz sweep of run directories found reaching ``dict("x")``, ``int("a")`` or ``.get`` on
a string; each goes into a copy of a real CPU run, and the commands run in-process through
the CLI entry (click's runner)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import dsprof
from dsprof.cli import main
from dsprof.meta_types import checked

COMMANDS = ("summary", "analyze", "memory", "gpu", "export")

# meta.json key -> a value of the wrong type (the fuzz sweep's, each a traceback before)
BAD_VALUES = [
    ("windows", None), ("windows", "w"), ("windows", [None]),
    ("python_children", "x"), ("python_children_more", "x"),
    ("python_children", [{"argv": "x", "seconds": "9", "launcher": ["torchrun"],
                          "exit_status": "0", "ended": "no"}, None, 3]),
    ("windows", [{"index": "a", "steps": "x", "file": "../../../../etc/passwd"}]),
    ("settings", "x"), ("rank_failures", "x"), ("devices", "cpu"),
    ("clock", "x"), ("clock", {"kind": 1, "rank_offsets_ns": {"0": "x"}}),
    ("ingest_notes", "x"), ("ingest_notes", {"flops_unknown": "x"}),
    ("compile", "x"), ("user_profiler", {"sessions": "x", "steps": "x"}),
    ("host_bandwidth", "x"), ("host_bandwidth", {"bytes_per_s": "x"}),
]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> Path:
    """A small CPU training run with GELU chains (the fusion analyzer prices them with the
    session's host bandwidth), analyzed once."""
    path = tmp_path_factory.mktemp("meta") / "run"
    torch.manual_seed(0)
    with dsprof.profile(path, schedule=dsprof.schedule(wait=2, active=3), quiet=True):
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(),
                                    torch.nn.Linear(64, 64), torch.nn.GELU(),
                                    torch.nn.Linear(64, 4))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(10):
            loss = model(torch.randn(16, 32)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert CliRunner().invoke(main, ["analyze", str(path)]).exit_code == 0
    return path


class _Tracebacks(logging.Handler):
    """dsprof log records that carry an exception (``logger.exception``): a traceback on
    stderr even where the command exits 0."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record.getMessage())


def _with_meta(run: Path, to: Path, **changes) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("reports", "*.json.gz"))
    meta = json.loads((to / "meta.json").read_text())
    meta.update(changes)
    (to / "meta.json").write_text(json.dumps(meta))
    return to


def _assert_commands_go_on(run: Path, tmp_path: Path) -> None:
    logged = _Tracebacks()
    logger = logging.getLogger("dsprof")
    logger.addHandler(logged)
    try:
        for command in COMMANDS:
            extra = ["-f", "chrome", "-o", str(tmp_path / "t.json")] if command == "export" \
                else []
            res = CliRunner().invoke(main, [command, str(run), *extra])
            # THEN each command works, or stops with one line (exit 2), never a traceback
            assert res.exit_code in (0, 2), (command, res.exit_code, res.output, res.exception)
            assert "Traceback" not in res.output, (command, res.output)
            if res.exit_code == 2:
                assert res.output.strip().startswith("dsprof: error: "), res.output
            assert not logged.records, (command, logged.records)
    finally:
        logger.removeHandler(logged)


@pytest.mark.parametrize(("key", "value"), BAD_VALUES,
                         ids=[f"{k}={json.dumps(v)[:30]}" for k, v in BAD_VALUES])
def test_wrong_typed_meta_value_reads_as_absent(cpu_run, tmp_path, key, value):
    # GIVEN a real run whose meta.json holds a value of a type dsprof never writes there
    run = _with_meta(cpu_run, tmp_path / "run", **{key: value})
    # WHEN summary, analyze, memory, gpu and export read it
    _assert_commands_go_on(run, tmp_path)


def test_meta_with_every_value_null_is_read(cpu_run, tmp_path):
    # GIVEN a run whose meta.json has every key null but its schema version
    meta = json.loads((cpu_run / "meta.json").read_text())
    run = _with_meta(cpu_run, tmp_path / "run",
                     **{k: None for k in meta if k != "schema_version"})
    # WHEN the commands read it THEN none fails
    _assert_commands_go_on(run, tmp_path)


def test_what_dsprof_writes_passes_the_type_check(cpu_run):
    # GIVEN the meta.json of a real run
    meta = json.loads((cpu_run / "meta.json").read_text())
    # THEN the type table drops nothing of it (else a run would lose a key once read)
    assert checked(meta) == meta
