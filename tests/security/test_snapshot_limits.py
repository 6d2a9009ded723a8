"""CUDA snapshot pickles from someone else: no code runs, no unbounded memory or time."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsprof.errors import TraceFormatError
from dsprof.ingest.bounded_pickle import SnapshotTooLarge, expansion, load_plain
from dsprof.ingest.cuda_snapshot import load_snapshot, snapshot_rows
from tests.conftest import REPO


def _laughs(levels: int = 24, fan: int = 10) -> bytes:
    """A snapshot whose trace is a list of ten references to a list of ten references ...:
    small on disk, 10**levels entries to any walk."""
    node: list = [{"action": "alloc", "addr": 1, "size": 512, "frames": []}]
    for _ in range(levels):
        node = [node] * fan
    return pickle.dumps({"segments": [], "device_traces": [node]}, protocol=4)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "dsprof", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


def test_billion_laughs_is_refused_fast(tmp_path):
    # GIVEN a 12 KB-class pickle that expands to 10**24 objects
    path = tmp_path / "laughs.pickle"
    path.write_bytes(_laughs())
    assert path.stat().st_size < 12_000
    # WHEN it is imported
    t0 = time.perf_counter()
    proc = _cli("import", str(path), "-o", str(tmp_path / "run"))
    elapsed = time.perf_counter() - t0
    # THEN one line, exit 2, in seconds, not minutes
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "laughs.pickle" in proc.stderr
    assert "expands" in proc.stderr or "memory" in proc.stderr
    assert elapsed < 30, elapsed
    assert not (tmp_path / "run").exists()


def test_memo_index_bomb_is_refused_without_the_memory():
    # LONG_BINPUT at index 2**27: CPython's unpickler would grow its memo to 2 GiB
    data = b"\x80\x04N" + b"r" + struct.pack("<I", 1 << 27) + b"."
    t0 = time.perf_counter()
    with pytest.raises(SnapshotTooLarge):
        load_plain(data)
    assert time.perf_counter() - t0 < 5


def test_a_pickle_naming_a_function_never_runs_it(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"segments": [], "device_traces": [], "x": Evil()}))
    with pytest.raises(TraceFormatError, match="evil.pickle.*stores a posix.system"):
        load_snapshot(path)
    assert not marker.exists()


@pytest.mark.parametrize("snap", [
    {"segments": [{"address": 0, "total_size": "lots", "blocks": []}]},          # ValueError
    {"segments": [], "device_traces": [[1, 2, 3]]},                              # AttributeError
    {"segments": [{"address": 0, "total_size": 8, "blocks": 5}]},                # TypeError
    {"segments": [{"device": "gpu", "address": 0, "total_size": 8, "blocks": []}]},  # ValueError
    {"segments": [], "device_traces": [[{"action": "alloc", "size": [1]}]]},     # TypeError
])
def test_malformed_snapshot_fields_are_one_error(tmp_path, snap):
    path = tmp_path / "bad.pickle"
    path.write_bytes(pickle.dumps(snap))
    with pytest.raises(TraceFormatError, match="bad.pickle"):
        snapshot_rows(path, None, rank=0, stack_base=0)


def test_expansion_counts_shared_references_and_depth():
    leaf = [1, 2, 3]
    assert expansion([leaf, leaf]) == 1 + 2 + 2 * 3
    assert expansion({"a": [1], "b": (2, 3)}) == 1 + 4 + 1 + 2
    with pytest.raises(SnapshotTooLarge, match="objects"):
        node: list = [0]
        for _ in range(30):
            node = [node] * 10
        expansion(node)
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(SnapshotTooLarge, match="nested"):
        expansion(deep)


def test_an_ordinary_snapshot_still_loads(tmp_path):
    frames = [{"filename": "train.py", "line": i, "name": "step"} for i in range(20)]
    blocks = [{"address": i * 512, "size": 512, "requested_size": 512,
               "state": "active_allocated", "frames": frames} for i in range(2000)]
    snap = {"segments": [{"device": 0, "address": 0, "total_size": 2000 * 512,
                          "allocated_size": 2000 * 512, "stream": 0, "blocks": blocks}],
            "device_traces": [[{"action": "alloc", "addr": b["address"], "size": 512,
                                "stream": 0, "time_us": i, "frames": frames}
                               for i, b in enumerate(blocks)]]}
    path: Path = tmp_path / "ok.pickle"
    path.write_bytes(pickle.dumps(snap))
    rows = snapshot_rows(path, None, rank=0, stack_base=0)
    assert len(rows.mem["ts_ns"]) >= 2000


def test_a_script_that_ignores_sigchld_still_gets_bounded_unpickling():
    """With SIGCHLD ignored the child's status is lost; the pure-Python unpickler (a dict
    memo) is used instead, and the memo bomb costs nothing."""
    import signal

    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        assert load_plain(pickle.dumps({"segments": [1]})) == {"segments": [1]}
        t0 = time.perf_counter()
        assert load_plain(b"\x80\x04N" + b"r" + struct.pack("<I", 1 << 27) + b".") is None
        assert time.perf_counter() - t0 < 5
        node: list = [0]
        for _ in range(30):
            node = [node] * 10
        with pytest.raises(SnapshotTooLarge):
            load_plain(pickle.dumps(node))
    finally:
        signal.signal(signal.SIGCHLD, previous)
