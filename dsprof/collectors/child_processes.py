"""Processes the profiled script starts with ``multiprocessing`` itself (``torch.multiprocessing.
Process``, ``multiprocessing.Process``): which, so a run that saw no step can say where its
training may have gone.

Hogwild training (PyTorch's example ``mnist_hogwild``) starts its trainers so, on a model in
shared memory: the profiled process only starts them and waits. ``dsprof run`` profiles the
process it starts (``mp.spawn``'s ranks are followed, :mod:`dsprof.collectors.spawned_ranks`),
so such a run holds no step, and its summary said "no step boundaries were seen (no
optimizer.step(), no backward(), no dsprof.step())", false of the script: two trainers had run
300 steps each. The session records each ``start()`` of this process (the target's name, the
start method, how many), and the summary says that they may have trained and how to profile
them.

Observation only: the target is read, ``BaseProcess.start`` runs as without dsprof, and the
target's name is recorded after. Not recorded: DataLoader workers (``torch.utils.data``),
``mp.spawn``'s own processes, ``multiprocessing``'s and ``concurrent.futures``' pool workers
(their targets are the library's), and processes started by a child.
"""

from __future__ import annotations

import os
from typing import Any

from dsprof.frames import raised_in_signal_handler

MAX_TARGETS = 16
"""Distinct (target, start method) entries kept: the rest are counted under ``other``."""

# targets whose processes are not the script's own (see the module's docstring)
_LIBRARY_TARGETS = ("torch.utils.data.", "torch.multiprocessing.spawn", "multiprocessing.",
                    "concurrent.futures.")

_original: Any = None  # BaseProcess.start, while dsprof's stands in its place
_session: Any = None


def install(session: Any) -> None:
    """Record the processes ``session``'s script starts (``session.child_processes``)."""
    global _original, _session
    from multiprocessing.process import BaseProcess

    _session = session
    if _original is None:
        _original = BaseProcess.start
        BaseProcess.start = _start  # type: ignore[method-assign]


def uninstall() -> None:
    global _original, _session
    _session = None
    if _original is None:
        return
    from multiprocessing.process import BaseProcess

    if BaseProcess.start is _start:  # a library that put its own there keeps it
        BaseProcess.start = _original  # type: ignore[method-assign]
    _original = None


def _start(self: Any) -> None:
    from multiprocessing.process import BaseProcess

    original = _original or BaseProcess.start
    if original is _start:  # (cannot happen while installed; never recurse)
        raise RuntimeError("dsprof's multiprocessing hook lost the original start()")
    # start() deletes the target (CPython's bpo-30775): read it before
    target = getattr(self, "_target", None)
    original(self)  # the script's process starts first, as without dsprof
    try:
        _record(self, target)
    except Exception as caught:  # a name dsprof cannot read is not the script's error
        if raised_in_signal_handler(caught):
            raise  # the script's own signal handler's: it is the script's


def _record(process: Any, target: Any) -> None:
    session = _session
    if session is None or getattr(session, "forked_child", False) or os.getpid() != session.pid:
        return
    if target is None:
        name = f"{type(process).__module__}.{type(process).__qualname__}.run"
    else:
        name = (f"{getattr(target, '__module__', None) or '?'}."
                f"{getattr(target, '__qualname__', None) or type(target).__qualname__}")
    if name.startswith(_LIBRARY_TARGETS):
        return
    import multiprocessing

    method = (getattr(process, "_start_method", None)
              or multiprocessing.get_start_method(allow_none=True) or "default")
    counts: dict[tuple[str, str], int] = session.child_processes
    key = (name, str(method))
    if key not in counts and len(counts) >= MAX_TARGETS:
        key = ("other", str(method))
    counts[key] = counts.get(key, 0) + 1


def to_meta(counts: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    """meta.json ``child_processes``: one entry per target and start method."""
    return [{"target": name, "start_method": method, "count": n}
            for (name, method), n in sorted(counts.items())]
