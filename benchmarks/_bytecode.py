"""Environment for a timed ``dsprof`` process: its bytecode cached, as an installed package's is.

pip compiles a package's modules at install (HTA's virtual environment has its bytecode too),
so a user's ``dsprof`` never compiles dsprof. A caller whose environment sets
``PYTHONDONTWRITEBYTECODE`` (this project's machines do) would otherwise time every process
compiling dsprof's ~400 modules again: +0.1 s on each ``dsprof import``. Each tree gets a
private ``PYTHONPYCACHEPREFIX`` (removed at exit), filled by the first process that runs there:
time a command at least once before the runs that count (the benchmarks take the fastest or
least of several runs, or make an untimed run first).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_CACHES: dict[str, Path] = {}


def cached_bytecode_env(env: dict[str, str], tree: Path | None) -> dict[str, str]:
    """``env`` with writing bytecode allowed, into ``tree``'s own cache (None: the installed
    dsprof)."""
    key = str(tree.resolve()) if tree is not None else ""
    if key not in _CACHES:
        _CACHES[key] = Path(tempfile.mkdtemp(prefix="dsprof-bench-pycache-"))
        atexit.register(shutil.rmtree, _CACHES[key], True)
    out = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out["PYTHONPYCACHEPREFIX"] = str(_CACHES[key])
    return out
