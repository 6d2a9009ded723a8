"""Which source files are the user's: the line a finding or an allocation points at is the
innermost frame outside torch, dsprof and the standard library. Shared by the collectors (live
frames) and ingest (recorded stacks)."""

from __future__ import annotations

import functools
import os
import sysconfig

DSPROF_DIR = os.path.dirname(os.path.abspath(__file__))
_STDLIB = sysconfig.get_paths()["stdlib"]


@functools.lru_cache(maxsize=4096)
def internal_file(filename: str) -> bool:
    """Code of torch, dsprof or the standard library: not where the user acts."""
    if filename.startswith((DSPROF_DIR, "<frozen")) or f"{os.sep}torch{os.sep}" in filename:
        return True
    return filename.startswith(_STDLIB) and "site-packages" not in filename
