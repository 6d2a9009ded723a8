"""Unpickle a CUDA memory snapshot with a bound on memory, CPU time and expansion.

Two attacks on a restricted unpickler that builds only plain data remain:

- memory: ``LONG_BINPUT`` with a large index makes CPython's unpickler grow its memo array to
  twice that index (a 10-byte pickle took 2 GiB and 8 s, measured); large ``*BYTES8`` lengths
  are bounded by the file size.
- expansion ("billion laughs"): a list that holds the same list ten times, nested thirty deep,
  is a few hundred bytes of pickle and loads fast, but any walk over it (ours, when rows are
  built) visits 10**30 objects.

So the pickle is first loaded in a forked child whose address space and CPU time are capped
(``RLIMIT_AS``/``RLIMIT_CPU``), which also walks the result counting every object as often as
it is reached (each distinct object's count is computed once, so the walk costs what the
pickle holds, not what it expands to). Only when the child succeeds does this process load the
same bytes, which then cost what they cost the child. Without ``fork`` (not Linux/macOS) the
pure-Python unpickler is used, whose memo is a dict (slower, never unbounded).
"""

from __future__ import annotations

import io
import os
import pickle
import signal
from typing import Any

from dsprof.ingest.limits import MAX_SNAPSHOT_DEPTH, MAX_SNAPSHOT_OBJECTS

# Python objects per pickle byte: a real snapshot takes ~15x its file size once loaded.
_MEMORY_PER_BYTE = 64
_MEMORY_BASE = 1 << 30
_CPU_BASE_S = 10
_CPU_PER_MB_S = 2

# child exit codes
_OK, _NAMED_CLASS, _TOO_BIG, _TOO_DEEP, _BAD = 0, 10, 11, 12, 13


class NamedClass(Exception):
    """The pickle names a class or function (a snapshot holds only plain data)."""


class SnapshotTooLarge(Exception):
    """The pickle would need more memory, CPU time, objects or depth than the limits allow."""


class PlainUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, tuples, strings, bytes, numbers, None and booleans."""

    def find_class(self, module: str, name: str) -> Any:
        raise NamedClass(f"{module}.{name}")


class _PurePlainUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    def find_class(self, module: str, name: str) -> Any:
        raise NamedClass(f"{module}.{name}")


def expansion(doc: Any, limit: int = MAX_SNAPSHOT_OBJECTS,
              max_depth: int = MAX_SNAPSHOT_DEPTH) -> int:
    """How many objects a full walk of ``doc`` visits (shared ones once per reference).

    Each container's count is computed once (memoized by identity), so this costs what the
    pickle holds, not what it expands to. Recursion is bounded by ``max_depth``.

    Raises:
        SnapshotTooLarge: past ``limit`` objects or nested deeper than ``max_depth``.
    """
    sizes: dict[int, int] = {}

    def walk(obj: Any, depth: int) -> int:
        known = sizes.get(id(obj))
        if known is not None:
            return known
        if depth > max_depth:
            raise SnapshotTooLarge(f"it is nested more than {max_depth} levels deep")
        if type(obj) is dict:
            total = 1 + 2 * len(obj)
            for k, v in obj.items():
                if type(v) in _CONTAINERS:
                    total += walk(v, depth + 1) - 1
                if type(k) is tuple:
                    total += walk(k, depth + 1) - 1
        else:
            total = 1 + len(obj)
            for v in obj:
                if type(v) in _CONTAINERS:
                    total += walk(v, depth + 1) - 1
        if total > limit:
            raise SnapshotTooLarge(f"it expands to more than {limit:,} objects (shared "
                                   "references counted where they are reached)")
        sizes[id(obj)] = total
        return total

    return walk(doc, 0) if type(doc) in _CONTAINERS else 1


_CONTAINERS = (list, tuple, dict)


def _vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _child(data: bytes) -> int:
    import resource

    vm = _vm_bytes()
    if vm:
        cap = vm + _MEMORY_BASE + _MEMORY_PER_BYTE * len(data)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    cpu = int(_CPU_BASE_S + _CPU_PER_MB_S * len(data) / 1e6)
    used = int(resource.getrusage(resource.RUSAGE_SELF).ru_utime) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (used + cpu, used + cpu + 5))
    try:
        expansion(PlainUnpickler(io.BytesIO(data)).load())
    except NamedClass:
        return _NAMED_CLASS
    except MemoryError:
        return _TOO_BIG
    except SnapshotTooLarge as exc:
        return _TOO_DEEP if "nested" in str(exc) else _TOO_BIG
    except BaseException:  # noqa: BLE001 - any other failure: the parent reports it
        return _BAD
    return _OK


def _check_in_child(data: bytes) -> int:
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = _BAD
        try:
            code = _child(data)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return _TOO_BIG if sig in (signal.SIGXCPU, signal.SIGKILL, signal.SIGSEGV) else _BAD
    return os.WEXITSTATUS(status)


def load_plain(data: bytes) -> Any:
    """Unpickle ``data`` as plain data within the limits.

    Raises:
        NamedClass: the pickle names a class or function.
        SnapshotTooLarge: over a limit (memory, CPU time, objects, depth).
        pickle.UnpicklingError, EOFError, ValueError, ...: a corrupt pickle, as pickle raises.
    """
    try:
        code = _check_in_child(data) if hasattr(os, "fork") else None
    except OSError:  # cannot fork, or SIGCHLD ignored by the profiled script (no status)
        code = None
    if code is None:
        doc = _PurePlainUnpickler(io.BytesIO(data)).load()
        expansion(doc)
        return doc
    if code == _TOO_BIG:
        raise SnapshotTooLarge("loading it would take more memory or CPU time than a real "
                               "snapshot of its size, or it expands past the object limit")
    if code == _TOO_DEEP:
        raise SnapshotTooLarge(f"it is nested more than {MAX_SNAPSHOT_DEPTH} levels deep")
    # _OK, _NAMED_CLASS or _BAD: loading it here costs what it cost the child, and raises
    # the same error, now with its message
    return PlainUnpickler(io.BytesIO(data)).load()
