"""Ingest's peak memory on a real trace stays near what the issue asks (under 2x the
decompressed trace): the process's resident high-water mark, measured in a fresh process (as
``benchmarks/ingest.py`` does), which, unlike a time, does not move with the machine's load.

hta_v100_1rank is the shared trace of small events (15.4 MB of JSON, 68,692 events) where
the peak weighs most against the trace. The child reads the decompressed trace once before
(to know its size), which leaves malloc's mmap threshold above that size: the harsher case
(dsprof/ingest/heap.py), where main at adb51b3 peaked at 3.8-4.0x. This tree: 1.78-1.82x as
``dsprof import`` runs it, 2.1-2.6x in a process that left Arrow's pool alone (``dsprof.load``
in a user's script; mimalloc keeps what Parquet's writers free). The bounds catch a gross
regression, with room for what the threads' timing moves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, trace_dir

# In a fresh process: one ingest of a tiny trace (imports and first-use costs done), then the
# kernel's peak-RSS mark is reset and the trace ingested; prints the MB it added, and the MB
# of the decompressed trace.
_CHILD = """
import os, sys, tempfile
from pathlib import Path
if sys.argv[3] == "import":
    from dsprof.ingest.heap import prefer_system_allocator
    assert prefer_system_allocator()
from dsprof.ingest.pipeline import ingest_run
from dsprof.ingest.trace_file import read_bytes
from dsprof.rundir import RunDir

def status_kb(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key))

def ingest(path, out):
    run = RunDir.create(out)
    raw = run.raw_dir(0)
    raw.mkdir(parents=True, exist_ok=True)
    os.symlink(path, raw / path.name)
    ingest_run(run)

trace, warm = Path(sys.argv[1]), Path(sys.argv[2])
mb = len(read_bytes(trace)) / 1e6
with tempfile.TemporaryDirectory() as tmp:
    ingest(warm, Path(tmp) / "warm")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = status_kb("VmRSS")
    ingest(trace, Path(tmp) / "run")
    print((status_kb("VmHWM") - before) / 1e3, mb)
"""


def _peak(trace: Path, warm: Path, mode: str) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DSPROF_", "DS_")) and k != "ARROW_DEFAULT_MEMORY_POOL"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(trace), str(warm), mode],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak, mb = map(float, proc.stdout.split())
    return peak, mb


@pytest.fixture(scope="module")
def traces() -> tuple[Path, Path]:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("the peak-RSS mark cannot be reset here (/proc/self/clear_refs)")
    trace = min(trace_dir("hta_v100_1rank").glob("*.json.gz"))
    warm = min(trace_dir("hta_inference_tiny").glob("*.json.gz"))
    return trace, warm


def test_import_peak_stays_near_the_goal(traces):
    # GIVEN the shared trace of small events, ingested as `dsprof import` ingests it
    # WHEN its peak memory is measured
    peak, mb = _peak(*traces, "import")
    # THEN ingest added about 1.8x the decompressed trace, not the 3.8-4.0x of before
    assert mb > 15
    assert peak < 2.2 * mb, f"ingest peak {peak:.1f} MB for {mb:.1f} MB of JSON"


def test_library_peak_stays_well_below_what_it_was(traces):
    # GIVEN the same trace ingested in a process that left Arrow's pool as pyarrow chose it
    # (dsprof.load in a user's script)
    # WHEN its peak memory is measured
    peak, mb = _peak(*traces, "library")
    # THEN far below the 3.8-4.0x it was (measured 2.1-2.6x)
    assert peak < 3.0 * mb, f"ingest peak {peak:.1f} MB for {mb:.1f} MB of JSON"
