"""GPU acceptance tests: skipped, with the reason, where there is no CUDA device.

Each test checks one CUDA path of dsprof against an independent reference taken on the same
run, and records the measured figure with ``record_property("figure", ...)``. When
``DSPROF_GPU_REPORT`` names a file, every test's outcome is appended to it as one JSON line
(``benchmarks/gpu_acceptance.sh`` prints its table from those lines). The path and what was
checked come from the test's docstring, first line ``PATH: what``, so a skipped test has a row
too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.gpu.cuda import no_cuda_reason

REPORT_ENV = "DSPROF_GPU_REPORT"
RUNS_ENV = "DSPROF_GPU_RUNS"


def pytest_collection_modifyitems(config, items):
    reason = no_cuda_reason()
    for item in items:
        if item.get_closest_marker("gpu") is not None and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    """Where the tests' run directories go: $DSPROF_GPU_RUNS (the acceptance script keeps
    them), else pytest's temporary directory."""
    base = os.environ.get(RUNS_ENV)
    if base:
        path = Path(base)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("gpu-runs")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    path = os.environ.get(REPORT_ENV)
    if not path or item.get_closest_marker("gpu") is None:
        return
    # one row per test: the call phase, or the phase that skipped or failed it first
    if report.when == "call" or (report.when == "setup" and not report.passed):
        doc = (item.function.__doc__ or item.name).strip().splitlines()[0]
        gpu_path, _, checked = doc.partition(":")
        if report.skipped:
            status = "SKIPPED"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(
                report.longrepr)
            figure = reason.removeprefix("Skipped: ")
        else:
            status = "PASS" if report.passed else "FAIL"
            props = dict(item.user_properties)
            figure = str(props.get("figure", ""))
            if report.failed:
                message = report.longrepr.reprcrash.message if hasattr(
                    report.longrepr, "reprcrash") and report.longrepr.reprcrash else str(
                    report.longrepr)
                figure = (figure + " | " if figure else "") + message.splitlines()[0][:300]
        row = {"test": item.name, "path": gpu_path.strip(), "checked": checked.strip(),
               "status": status, "figure": figure, "seconds": round(report.duration, 1)}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


# -- runs shared by several tests (each made once per session, only when a test asks) --------
@pytest.fixture(scope="session")
def fp32_run(runs_dir):
    """The fp32 MLP probe with the profiler's own key_averages() dumped per window. Runs whose
    findings no test reads skip the analysis at exit (loading them ingests the tables)."""
    from tests.gpu.runs import SCHEDULE, run_probe

    return run_probe(runs_dir, "fp32", "train_probe", "--key-averages",
                     dsprof_args=(*SCHEDULE, "--no-analyze"))


@pytest.fixture(scope="session")
def tf32_run(runs_dir):
    from tests.gpu.runs import SCHEDULE, run_probe

    return run_probe(runs_dir, "tf32", "train_probe",
                     dsprof_args=(*SCHEDULE, "--tf32", "--no-analyze"))


@pytest.fixture(scope="session")
def bf16_run(runs_dir):
    from tests.gpu.runs import SCHEDULE, run_probe

    return run_probe(runs_dir, "bf16", "train_probe", "--autocast",
                     dsprof_args=(*SCHEDULE, "--no-analyze"))


@pytest.fixture(scope="session")
def matmul_run(runs_dir):
    """The bf16 matmul loop (about 1.7 s of matrix work on an H200), with the metric sampler
    at its default 100 ms: NVML refreshes GPM counters about every 100 ms."""
    from tests.gpu.runs import run_probe

    return run_probe(runs_dir, "matmul", "matmul_probe", "--steps", "60",
                     dsprof_args=("--wait", "1", "--warmup", "1", "--active", "4",
                                  "--sample-ms", "100", "--no-analyze"))
