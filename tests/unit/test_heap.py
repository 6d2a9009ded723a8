"""dsprof.ingest.heap: `dsprof import` has Arrow's C++ default pool (Parquet's writers) allocate
from the C library; nothing else changes the pool, and a pool the user chose is kept."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, trace_dir


def _python(code: str, **env_vars: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DSPROF_", "DS_")) and k != "ARROW_DEFAULT_MEMORY_POOL"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env_vars)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_dsprof_import_ingests_with_the_system_pool(tmp_path):
    # GIVEN a real trace imported by the import command, in its own process
    trace = min(trace_dir("hta_a100_event_sync").glob("*.json.gz"))
    out = _python(
        "import sys\n"
        "from dsprof.cli import main\n"
        f"main(['import', {str(trace)!r}, '-o', {str(tmp_path / 'run')!r}, '--no-analyze'],"
        " standalone_mode=False)\n"
        "import pyarrow as pa\n"
        "print(pa.default_memory_pool().backend_name)\n")
    # THEN Arrow's default pool in that process is the C library's
    assert out.splitlines()[-1] == "system"


def test_a_users_choice_and_a_loaded_pyarrow_are_left_alone():
    from dsprof.ingest.heap import prefer_system_allocator  # noqa: F401 - importable alone

    # a pool the user chose stays
    code = ("from dsprof.ingest.heap import prefer_system_allocator as p\n"
            "import os\nprint(p(), os.environ['ARROW_DEFAULT_MEMORY_POOL'])")
    assert _python(code, ARROW_DEFAULT_MEMORY_POOL="jemalloc") == "False jemalloc"
    # once pyarrow is loaded it is too late: nothing is set
    code = ("import pyarrow\nfrom dsprof.ingest.heap import prefer_system_allocator as p\n"
            "import os\nprint(p(), os.environ.get('ARROW_DEFAULT_MEMORY_POOL'))")
    assert _python(code) == "False None"
    # a fresh process that runs no user code: set
    code = ("from dsprof.ingest.heap import prefer_system_allocator as p\n"
            "import os\nprint(p(), os.environ.get('ARROW_DEFAULT_MEMORY_POOL'))")
    assert _python(code) == "True system"
