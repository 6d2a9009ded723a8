"""dsprof.collectors.torch_arrival: a callback at the end of a module's first import,
invisible to the importer. Each test imports a package written under tmp_path, so the real torch is not
touched (the end-to-end case is tests/integration/test_what_the_script_sees.py)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from importlib.machinery import SourceFileLoader

import pytest

from dsprof.collectors import torch_arrival


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``arrival_pkg`` on sys.path whose ``__init__`` sets ``READY`` last."""
    root = tmp_path / "arrival_pkg"
    root.mkdir()
    (root / "__init__.py").write_text("from . import part\nREADY = part.VALUE + 1\n")
    (root / "part.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    torch_arrival.stop_waiting("arrival_pkg")
    for name in [n for n in sys.modules if n.split(".")[0] == "arrival_pkg"]:
        del sys.modules[name]


def test_the_callback_runs_once_at_the_end_of_the_first_import(package):
    seen = []
    torch_arrival.when_imported("arrival_pkg",
                                lambda: seen.append(sys.modules["arrival_pkg"].READY))
    assert torch_arrival.waiting("arrival_pkg") and seen == []
    import arrival_pkg

    # the package had run to its end when the callback ran
    assert seen == [42]
    # the importer sees the module as Python's own import leaves it
    assert type(arrival_pkg.__loader__) is SourceFileLoader
    assert type(arrival_pkg.__spec__.loader) is SourceFileLoader
    assert arrival_pkg.__spec__._initializing is False
    # and it ran once
    importlib.reload(arrival_pkg)
    assert seen == [42] and not torch_arrival.waiting("arrival_pkg")


def test_an_imported_module_calls_back_at_once(package):
    import arrival_pkg  # noqa: F401

    seen = []
    torch_arrival.when_imported("arrival_pkg", lambda: seen.append(1))
    assert seen == [1] and not torch_arrival.waiting("arrival_pkg")


def test_a_failing_callback_never_fails_the_import(package, caplog):
    def fails():
        raise RuntimeError("session start broke")

    torch_arrival.when_imported("arrival_pkg", fails)
    import arrival_pkg

    assert arrival_pkg.READY == 42


def test_a_failed_import_calls_nothing_and_waits_for_the_next_try(package):
    (package / "part.py").write_text("raise ImportError('broken install')\n")
    seen = []
    torch_arrival.when_imported("arrival_pkg", lambda: seen.append(1))
    with pytest.raises(ImportError, match="broken install"):
        import arrival_pkg
    assert seen == [] and torch_arrival.waiting("arrival_pkg")
    (package / "part.py").write_text("VALUE = 1\n")
    importlib.invalidate_caches()
    sys.modules.pop("arrival_pkg.part", None)
    import arrival_pkg  # noqa: F401

    assert seen == [1]


def test_another_thread_importing_it_during_the_callback_does_not_wait_for_it(package):
    # a collector started by the callback may import the module from its own thread while
    # the callback waits for that thread: the import must return at once
    done = []

    def callback():
        worker = threading.Thread(target=lambda: done.append(
            importlib.import_module("arrival_pkg").READY))
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "the thread's import waited on the callback"

    torch_arrival.when_imported("arrival_pkg", callback)
    import arrival_pkg  # noqa: F401

    assert done == [42]


def test_other_modules_pass_through(package):
    (package.parent / "arrival_other.py").write_text("X = 1\n")
    seen = []
    torch_arrival.when_imported("arrival_pkg", lambda: seen.append(1))
    try:
        import arrival_other

        assert arrival_other.X == 1 and seen == [] and torch_arrival.waiting("arrival_pkg")
    finally:
        sys.modules.pop("arrival_other", None)


def test_a_lazy_import_through_find_spec_calls_back_at_first_use(package):
    # GIVEN the LazyLoader recipe of Python's docs (lazy_loader and others do it): find_spec,
    # the module put in sys.modules, its body run at the first attribute read. It bypasses
    # the import statement, so only the spec find_spec returns can carry the callback, which
    # is why that spec shows dsprof's loader until the module has run (docs/decisions.md)
    seen = []
    torch_arrival.when_imported("arrival_pkg",
                                lambda: seen.append(sys.modules["arrival_pkg"].READY))
    spec = importlib.util.find_spec("arrival_pkg")
    lazy = importlib.util.LazyLoader(spec.loader)
    spec.loader = lazy
    module = importlib.util.module_from_spec(spec)
    sys.modules["arrival_pkg"] = module
    lazy.exec_module(module)
    assert seen == [] and torch_arrival.waiting("arrival_pkg")
    # WHEN the script first uses it THEN the callback runs once, after the body
    assert module.READY == 42
    assert seen == [42] and not torch_arrival.waiting("arrival_pkg")
    assert type(module.__loader__) is SourceFileLoader

