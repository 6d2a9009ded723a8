"""Running the probes under ``dsprof run`` for the GPU tests, and reading what came out."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsprof.run import load
from tests.integration.helpers import Result

REPO = Path(__file__).resolve().parents[2]
PROBES = Path(__file__).resolve().parent / "probes"
# record steps 3..5 of the probes: step 0 holds setup, 1 waits, 2 warms the profiler up
SCHEDULE = ("--wait", "1", "--warmup", "1", "--active", "3")


@dataclass
class ProbeRun:
    """A finished ``dsprof run`` of a probe: its run directory and the probe's own figures."""

    path: Path
    probe_dir: Path
    result: Result

    @property
    def probe(self) -> dict[str, Any]:
        return json.loads((self.probe_dir / "probe.json").read_text())

    def findings(self) -> list[dict[str, Any]]:
        return json.loads((self.path / "findings.json").read_text())["findings"]

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple]:
        """Rows of ``query`` on the run; a table the run lacks fails the check in one line
        (on a GPU every table these checks read should be there)."""
        import duckdb

        with load(self.path) as run:
            try:
                return run.sql(query, params or [])
            except duckdb.CatalogException as exc:
                raise AssertionError(f"run {self.path.name}: {str(exc).splitlines()[0]}") \
                    from None

    def has(self, table: str) -> bool:
        with load(self.path) as run:
            return run.has(table)

    def log_lines(self, word: str) -> str:
        """The run's dsprof.log lines that mention ``word`` (why a collector was off)."""
        log = self.path / "dsprof.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return " / ".join(line[-160:] for line in lines if word in line)[-600:]

    def profiled_steps(self) -> list[int]:
        return [s for (s,) in self.sql("SELECT step FROM steps WHERE profiled ORDER BY step")]


def dsprof(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    """``python -m dsprof ARGS`` with this checkout first on the path. Unlike the integration
    helper it keeps an inherited PYTHONPATH: on a lent GPU machine the project's missing
    dependencies come from wheels unpacked there (benchmarks/gpu_acceptance.sh)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    inherited = os.environ.get("PYTHONPATH")
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([inherited] if inherited else [])])
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "dsprof", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_probe(runs_dir: Path, name: str, script: str | Path, *script_args: str,
              dsprof_args: tuple[str, ...] = SCHEDULE, env: dict[str, str] | None = None,
              expect_code: int = 0, timeout: float = 300) -> ProbeRun:
    """``dsprof run -o RUNS/name DSPROF_ARGS SCRIPT --out RUNS/name-probe SCRIPT_ARGS``; the
    script is a probe name (``tests/gpu/probes/<name>.py``) or a path. Probes get ``--out``;
    other scripts (the examples) do not."""
    path, probe_dir = runs_dir / name, runs_dir / f"{name}-probe"
    script_path = Path(script) if Path(script).is_absolute() else PROBES / f"{script}.py"
    out_args = ("--out", str(probe_dir)) if script_path.parent == PROBES else ()
    res = dsprof("run", "-o", str(path), *dsprof_args, str(script_path), *out_args,
                 *script_args, env=env, timeout=timeout)
    assert res.code == expect_code, (
        f"dsprof run {script_path.name} exited {res.code}, expected {expect_code}: "
        f"{res.stderr[-1500:]}")
    return ProbeRun(path, probe_dir, res)


def tensor_core_share(run: ProbeRun) -> tuple[float, int, list[str]]:
    """(share of matrix-kernel time on Tensor Cores, matrix kernels whose name could not tell,
    the three longest matrix kernel names) over the run's kernels."""
    rows = run.sql("""
        SELECT name, sum(dur_ns), bool_or(tensor_core), count(*) FILTER (tensor_core IS NULL)
        FROM kernels WHERE category IN ('gemm', 'conv', 'attention')
        GROUP BY name ORDER BY 2 DESC""")
    total = sum(r[1] for r in rows)
    on_tc = sum(r[1] for r in rows if r[2])
    unknown = sum(r[3] for r in rows)
    return (on_tc / total if total else 0.0), unknown, [r[0] for r in rows[:3]]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def short(name: str, width: int = 70) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."
