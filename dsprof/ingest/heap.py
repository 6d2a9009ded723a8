"""Keep the memory an ingest frees from staying resident: the C heap's free pages go back to
the system once a file's tables are built, and ``dsprof import`` has Arrow's C++ code allocate
from the C library too.

glibc's malloc keeps freed memory for reuse, and its mmap threshold rises to the size of the
largest block freed (up to 32 MiB): once a trace's decompressed buffer (15-35 MB) is freed,
every array below that size comes from the heap, whose free pages are returned only at its top
and only past twice that size. A stage's freed arrays then stay resident while the next stage
allocates arrays of other sizes beside them. ``malloc_trim(0)`` (:func:`release_free_memory`)
returns every whole free page, inside the heap too, without changing any of malloc's settings,
so it is safe in a user's process (``dsprof.load``); where the C library is not glibc it does
nothing.

Parquet's column writers allocate from Arrow's C++ default pool, which pyarrow gives no way
to choose for them (``pa.set_memory_pool`` sets only pyarrow's own default, which ingest
already points at the C library: ``pipeline.arrow_system_pool``). That pool is mimalloc, which
kept 8.2 MB resident after writing the ops table of hta_v100_1rank (5.8 MB in Arrow; its live
peak was 0.9 MB), and as much again after the next table: a quarter of that trace's ingest
peak (34 MB with it, 26 MB without). The environment variable ``ARROW_DEFAULT_MEMORY_POOL`` chooses the pool when
pyarrow loads; :func:`prefer_system_allocator` sets it for commands that only ingest and
analyze (``dsprof import``), never in a process that runs the user's code (``dsprof run``):
there it would change the user's own Arrow pool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable

ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"

_trim: Callable[[int], int] | None | bool = False  # False: not looked up yet


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc only; a no-op elsewhere)."""
    global _trim
    if _trim is False:
        _trim = _find_trim()
    if _trim is not None:
        _trim(0)


def _find_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def prefer_system_allocator() -> bool:
    """Have Arrow's C++ default pool allocate from the C library in this process (and the
    ingest workers it starts), unless the user chose a pool. Only before pyarrow is loaded,
    and only in a dsprof command that runs no user code. Returns whether it is in effect."""
    if "pyarrow" in sys.modules:
        return os.environ.get(ARROW_POOL_ENV) == "system"
    os.environ.setdefault(ARROW_POOL_ENV, "system")
    return os.environ[ARROW_POOL_ENV] == "system"
