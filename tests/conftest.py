"""Shared fixtures: where the real GPU traces live, and small helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import machine_share
from tests.machine_share import (
    MachineShare,
    close_share_folder,
    open_share_folder,
    share_folder,
)

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


# This worker's hold on the machine under pytest-xdist (tests/machine_share.py); None when the
# suite runs in one process. Taken in the run-test hooks, not in a fixture, so that it covers
# every fixture an item sets up, session-scoped ones (the corpus's runs) included.
_share: MachineShare | None = None
_share_module: str | None = None  # the ``timing`` module whose fixtures hold the machine alone


def _module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def _module_mark(item: pytest.Item, name: str) -> bool:
    module = item.getparent(pytest.Module)
    return module is not None and module.get_closest_marker(name) is not None


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_setup(item):
    global _share, _share_module
    if _share is None and (folder := share_folder(item.config)):
        _share = machine_share.worker_share = MachineShare(folder)
    if _share is not None:
        if _module_mark(item, "timing"):
            if _share_module != _module_of(item):
                _share.alone()  # held until the module's fixtures are torn down
                _share_module = _module_of(item)
        elif item.get_closest_marker("timing") is not None:
            _share.alone()  # one timing test
        else:
            _share.shared()  # this test only: a recording on the other worker waits for it
        machine_share.records_alone = item.get_closest_marker("timed_runs") is not None
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    global _share_module
    yield
    if _share is None:
        return
    if _share_module is not None and nextitem is not None \
            and _module_of(nextitem) == _share_module:
        return  # the timing module's fixtures still hold the machine
    _share.release()
    _share_module = None
    machine_share.records_alone = False


def pytest_configure(config):
    open_share_folder(config)


def pytest_unconfigure(config):
    close_share_folder()


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
