"""Shared fixtures: where the real GPU traces live, and small helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
EXAMPLES = REPO / "examples"


def trace_dir(name: str) -> Path:
    """A folder of ../shared/traces; the test is skipped (with the reason) when it is absent."""
    path = TRACES / name
    if not path.exists():
        pytest.skip(f"shared trace {name} not found at {path} (../shared/traces is absent)")
    return path


def all_trace_files() -> list[Path]:
    if not TRACES.exists():
        return []
    return sorted(p for p in TRACES.glob("*/*") if p.name != "README.md")


@pytest.fixture
def dsprof_cmd() -> list[str]:
    return [sys.executable, "-m", "dsprof"]


@pytest.fixture(autouse=True)
def _no_leaked_session():
    """Every test must leave no dsprof session and no dsprof global hooks behind."""
    yield
    from dsprof.collectors import session

    assert session.current() is None, "a test left a dsprof session running"


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/* from the current output (review the diff!)")


@pytest.fixture
def golden(request):
    """Compare text with tests/golden/<name>; --update-golden rewrites the file."""

    def check(name: str, text: str) -> None:
        path = REPO / "tests" / "golden" / name
        if request.config.getoption("--update-golden"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        assert path.exists(), f"no golden file {path}; run pytest --update-golden once"
        assert text == path.read_text()

    return check
