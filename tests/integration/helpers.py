"""Run ``python -m dsprof`` in a subprocess, as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.machine_share import let_a_recording_in, recording

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def dsprof(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
           timeout: float = 240, timed: bool = True) -> Result:
    """``python -m dsprof *args``. ``timed=False``: a run of a ``timed_runs`` test whose times
    the test does not judge (a knob's effect on the script's output, a finding that cannot
    exist without its ops) runs beside other tests instead of alone."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("DSPROF_", "DS_", "TINY_"))}
    full_env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    full_env.update(env or {})
    # a run, a verify or a tune probe records times a ``timed_runs`` test may judge: quiet
    let_a_recording_in()
    quiet = (recording() if timed and args[:1] in (("run",), ("verify",), ("tune",))
             else contextlib.nullcontext())
    with quiet:
        proc = subprocess.run([sys.executable, "-m", "dsprof", *args], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def analyzed_here(run: Path) -> dict:
    """Analyse a run made with ``--no-analyze`` in this process, as the run's end would have
    (the same ``analyze``, which writes ``findings.json``), and return its findings. A
    ``timed_runs`` test records its run alone on the machine: the analysis reads tables, not
    clocks, so it runs here, beside other tests, in a process whose pyarrow and DuckDB are
    loaded (0.7-0.9 s of the machine alone less a run: CI's time)."""
    from dsprof.analyzers.registry import analyze
    from dsprof.run import load

    with load(run) as loaded:
        analyze(loaded)
    return json.loads((run / "findings.json").read_text())


def meta(run: Path) -> dict:
    return json.loads((run / "meta.json").read_text())


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def plain(script: Path, *args: str, timeout: float = 240, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The script without dsprof, in the environment dsprof's runs get (with ``env``, as
    :func:`dsprof`'s)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    full_env.update({"OMP_NUM_THREADS": "1", **(env or {})})
    let_a_recording_in()
    return subprocess.run([sys.executable, str(script), *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)


def runs_as_without_dsprof(script: Path, out: Path, *args: str) -> Result:
    """Run ``script`` plainly, then under ``dsprof run -q --no-analyze -o out``; both must
    exit 0 and print the same. Returns dsprof's run. The run is not analysed at its end (it
    prints nothing to show): a test that reads its tables or findings (``load``, ``analyze``)
    ingests it in the test's process, whose pyarrow and DuckDB are loaded already (0.7-0.9 s
    less a run: CI's time)."""
    bare = plain(script, *args)
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), *args)
    assert bare.returncode == 0, bare.stderr
    assert res.code == 0, res.stderr
    assert res.stdout == bare.stdout
    return res
