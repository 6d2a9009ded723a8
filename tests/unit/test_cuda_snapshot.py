"""CUDA memory snapshots, built in the exact format of ``torch.cuda.memory._snapshot()``
(documented in torch/cuda/memory.py): ingest, totals, stacks, fragmentation, bad pickles."""

from __future__ import annotations

import collections
import pickle

import pytest

from dsprof.analyzers.fragmentation import FragmentationAnalyzer
from dsprof.analyzers.registry import Context
from dsprof.errors import TraceFormatError
from dsprof.ingest.cuda_snapshot import load_snapshot
from dsprof.ingest.importer import import_traces
from dsprof.reports.memory import memory_report
from dsprof.run import load
from tests.integration.helpers import dsprof

U = 10 << 20  # 10 MiB
A, B, C = 0x7F00_0000_0000, 0x7F10_0000_0000, 0x7F20_0000_0000
T0 = 1_790_000_000_000_000  # time_us

TORCH_FRAME = {"filename": "/site-packages/torch/nn/modules/linear.py", "line": 125,
               "name": "forward"}
FWD = [TORCH_FRAME, {"filename": "model.py", "line": 10, "name": "forward"},
       {"filename": "train.py", "line": 5, "name": "main"}]
OPT = [{"filename": "train.py", "line": 7, "name": "main"}]
PARAM = [{"filename": "params.py", "line": 3, "name": "build"}]


def _entry(action, addr, size, frames=(), t=0, **extra):
    e = {"action": action, "addr": addr, "size": size, "stream": 0, "frames": list(frames),
         "time_us": T0 + t, **extra}
    if action == "oom":
        del e["addr"]
    return e


def snapshot() -> dict:
    """A: 20U segment holding 8U and 6U live blocks around a 4U hole and a 2U tail; B: a 2U
    segment, all free; C: a 1U block allocated before the recorded trace."""
    seg_a = {"device": 0, "address": A, "total_size": 20 * U, "stream": 0, "segment_type": "large",
             "segment_pool_id": (0, 0), "allocated_size": 14 * U, "active_size": 14 * U,
             "blocks": [
                 {"size": 8 * U, "requested_size": 8 * U, "address": A,
                  "state": "active_allocated", "frames": FWD},
                 {"size": 4 * U, "requested_size": 4 * U, "address": A + 8 * U,
                  "state": "inactive", "frames": []},
                 {"size": 6 * U, "requested_size": 6 * U, "address": A + 12 * U,
                  "state": "active_allocated", "frames": OPT},
                 {"size": 2 * U, "requested_size": 2 * U, "address": A + 18 * U,
                  "state": "inactive", "frames": []}]}
    seg_b = {"device": 0, "address": B, "total_size": 2 * U, "stream": 0, "segment_type": "large",
             "segment_pool_id": (0, 0), "allocated_size": 0, "active_size": 0,
             "blocks": [{"size": 2 * U, "requested_size": 2 * U, "address": B,
                         "state": "inactive", "frames": []}]}
    seg_c = {"device": 0, "address": C, "total_size": U, "stream": 0, "segment_type": "large",
             "segment_pool_id": (0, 0), "allocated_size": U, "active_size": U,
             "blocks": [{"size": U, "requested_size": U, "address": C,
                         "state": "active_allocated", "frames": PARAM}]}
    trace = [
        _entry("segment_alloc", A, 20 * U, t=1),
        _entry("alloc", A, 8 * U, FWD, t=2),
        _entry("alloc", A + 8 * U, 4 * U, FWD, t=3),
        _entry("alloc", A + 12 * U, 6 * U, OPT, t=4),
        _entry("free_requested", A + 8 * U, 4 * U, FWD, t=5),
        _entry("free_completed", A + 8 * U, 4 * U, FWD, t=6),
        _entry("segment_alloc", B, 2 * U, t=7),
        _entry("alloc", B, 2 * U, OPT, t=8),
        _entry("free_requested", B, 2 * U, OPT, t=9),
        _entry("free_completed", B, 2 * U, OPT, t=10),
        _entry("oom", 0, 30 * U, t=11, device_free=U),
    ]
    return {"segments": [seg_a, seg_b, seg_c], "device_traces": [trace]}


@pytest.fixture
def snap_run(tmp_path):
    path = tmp_path / "snapshot.pickle"
    path.write_bytes(pickle.dumps(snapshot(), protocol=4))
    run, _ = import_traces([path], tmp_path / "run")
    with load(run.path) as r:
        yield r


def test_totals_are_rebuilt_at_every_event(snap_run):
    # GIVEN the snapshot imported
    # WHEN reading the rows in time order
    rows = snap_run.sql("""SELECT ts_ns, action, bytes, allocated, reserved FROM memory
                           ORDER BY ts_ns NULLS FIRST""")
    # THEN the block older than the trace comes first, and the totals follow the allocator
    # (alloc and free_completed move allocated; segments move reserved)
    assert rows[0][:3] == (None, "alloc", U)
    timed = [(a, b, al, res) for t, a, b, al, res in rows if t is not None]
    assert [(a, al // U, res // U) for a, _, al, res in timed] == [
        ("segment_alloc", 1, 21), ("alloc", 9, 21), ("alloc", 13, 21), ("alloc", 19, 21),
        ("free", 15, 21), ("segment_alloc", 15, 23), ("alloc", 17, 23), ("free", 15, 23),
        ("oom", 15, 23)]
    assert timed[0][0] == "segment_alloc"
    assert snap_run.sql("SELECT min(ts_ns) FROM memory")[0][0] == (T0 + 1) * 1000


def test_stacks_and_report_name_the_user_frame(snap_run):
    # GIVEN the snapshot imported
    # WHEN asking what was live at the peak
    report = memory_report(snap_run)
    (peak,) = report.peaks
    # THEN the peak is 19U (before the 4U block was freed) and the sites are user frames,
    # not torch's
    assert peak.device == "cuda:0" and peak.peak_bytes == 19 * U
    sites = {h.key: h.bytes for h in peak.by_site}
    assert sites["model.py:10 in forward"] == 12 * U
    assert sites["train.py:7 in main"] == 6 * U
    assert sites["params.py:3 in build"] == U
    assert peak.unattributed == 0


def test_segments_give_fragmentation_and_the_finding(snap_run):
    # GIVEN the snapshot's final state: 6U free inside segment A, which holds live blocks
    row = snap_run.sql("""SELECT allocated, reserved, inactive_split, largest_free
                          FROM allocator WHERE source = 'snapshot'""")[0]
    assert row == (15 * U, 23 * U, 6 * U, 4 * U)
    # WHEN the fragmentation analyzer runs
    ctx = Context(snap_run)
    assert FragmentationAnalyzer().skip_reason(ctx) is None
    (finding,) = FragmentationAnalyzer().run(ctx)
    # THEN it offers expandable segments and the 6U they would return
    assert finding.saving_bytes == 6 * U
    assert finding.apply == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def test_memory_command_prints_the_peak_and_sites(tmp_path):
    path = tmp_path / "snap.pickle"
    path.write_bytes(pickle.dumps(snapshot()))
    res = dsprof("import", str(path), "-o", str(tmp_path / "run"))
    assert res.code == 0, res.stderr
    res = dsprof("memory", str(tmp_path / "run"))
    assert res.code == 0, res.stderr
    assert "cuda:0" in res.stdout and "190.00 MiB" in res.stdout
    assert "model.py:10 in forward" in res.stdout


@pytest.mark.parametrize("payload, message", [
    (pickle.dumps([1, 2, 3]), "not a CUDA memory snapshot (expected a dict"),
    (pickle.dumps(collections.OrderedDict(a=1)), "stores a collections.OrderedDict object"),
    (pickle.dumps(snapshot())[:500], "truncated or corrupt pickle"),
    (b"", "the file is empty"),
    (pickle.dumps({"segments": [{"address": 1}], "device_traces": []}), "malformed segment"),
])
def test_bad_snapshots_get_one_clear_message(tmp_path, payload, message):
    path = tmp_path / "bad.pickle"
    path.write_bytes(payload)
    with pytest.raises(TraceFormatError, match="bad.pickle") as err:
        load_snapshot(path)
    assert message in str(err.value)


def test_bad_snapshot_on_the_command_line_is_one_line(tmp_path):
    path = tmp_path / "half.pickle"
    path.write_bytes(pickle.dumps(snapshot())[:300])
    res = dsprof("import", str(path), "-o", str(tmp_path / "run"))
    assert res.code == 2
    assert res.stderr.startswith("dsprof: error: ") and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()
