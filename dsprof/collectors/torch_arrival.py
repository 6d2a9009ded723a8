"""Start the session when the script imports torch, not before the script runs.

``python train.py`` loads torch at the script's ``import torch``. What the script does before
that line still shapes the program: ``os.environ["OMP_NUM_THREADS"] = "1"`` (read once, as
torch's OpenMP and MKL runtimes load), ``MKL_NUM_THREADS``, a ``sys.path`` entry, a
``torch`` it installs or chooses. dsprof's hooks live on torch, so they used to go in before
the script started, loading torch (and numpy) first: the script's line came too late and
dsprof profiled a program with torch's default threads. ``dsprof run`` now loads neither
before the script; :func:`when_torch_loads` starts the session at the end of the script's
own ``import torch`` (whoever imports it: the script, transformers, Lightning), before the
line after it runs.

How: a finder first on ``sys.meta_path`` answers only for ``torch``, once
(:func:`when_imported` does it for any top-level module). It takes the spec the other finders
give and wraps its loader so that, when torch's ``__init__`` has run, the original loader is
put back on the module (``torch.__loader__`` and ``__spec__.loader`` are what they are
without dsprof) and the callback runs. The module is marked initialised before
the callback: another thread's ``import torch`` then returns at once instead of waiting on
the module's import lock, which this thread holds until the callback returns (a collector's
thread importing torch would otherwise wait on the session start that waits on it).
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from typing import Any

from dsprof.frames import raised_in_signal_handler


def when_torch_loads(callback: Callable[[], None]) -> None:
    """Call ``callback()`` once torch is imported: now if it already is, else at the end of the
    first ``import torch`` in this process."""
    when_imported("torch", callback)


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once the module ``name`` is imported (a submodule too: finders on
    ``sys.meta_path`` are asked for ``torch._dynamo`` with its parent's path): now if it
    already is, else at the end of its first import. A failed import (not installed, a broken
    install) calls nothing and leaves the finder in place for a later try, as Python would
    try again."""
    if name in sys.modules:
        callback()
        return
    sys.meta_path.insert(0, _ArrivalFinder(name, callback))


def waiting(name: str = "torch") -> bool:
    """Whether a callback still waits for ``name`` (not imported yet)."""
    return any(isinstance(f, _ArrivalFinder) and f.name == name for f in sys.meta_path)


def stop_waiting(name: str = "torch") -> None:
    """Take the finder out (the script ended without importing it)."""
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not (isinstance(f, _ArrivalFinder) and f.name == name)]


class _ArrivalFinder:
    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name = name
        self._callback = callback
        self._busy = threading.local()  # this thread is asking the other finders

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> ModuleSpec | None:
        if fullname != self.name or getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            spec = _spec_from_others(self, fullname, path, target)
        finally:
            self._busy.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ThenCall(spec.loader, self)
        return spec

    def loaded(self) -> None:
        """The module's ``__init__`` ran: out of the way for good, then the callback. Its
        failure is dsprof's, never the script's: its import succeeds whatever happens here."""
        stop_waiting(self.name)
        try:
            self._callback()
        except Exception as exc:  # a profiler must not fail the script's import
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            from dsprof.log import logger

            logger.error("dsprof's step when %s loaded failed: %s: %s", self.name,
                         type(exc).__name__, exc)

    def invalidate_caches(self) -> None:
        pass


def _spec_from_others(me: _ArrivalFinder, fullname: str, path: Sequence[str] | None,
                      target: types.ModuleType | None) -> ModuleSpec | None:
    for finder in list(sys.meta_path):
        if finder is me or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _ThenCall:
    """The spec's own loader, and the callback once it has executed the module."""

    def __init__(self, loader: Any, finder: _ArrivalFinder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: types.ModuleType) -> None:
        # the module as Python's own import leaves it: its loader, not this wrapper
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        self._loader.exec_module(module)
        if spec is not None:
            spec._initializing = False
        self._finder.loaded()

    def __getattr__(self, name: str) -> Any:  # is_package, get_resource_reader, ...
        return getattr(self._loader, name)
