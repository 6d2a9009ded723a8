"""CUDA memory as dsprof records it, against the allocator's own counters on the same run:
step peaks, the allocator snapshot at the peak, the out-of-memory post-mortem."""

from __future__ import annotations

import json

import pytest

from tests.gpu.runs import PROBES, run_probe
from tests.integration.helpers import dsprof, plain, write

pytestmark = pytest.mark.gpu

PEAK_LOG = """
import torch
model = torch.nn.Linear(1024, 1024).cuda()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for mib in (256, 64, 16):
    scratch = torch.empty(mib << 20, dtype=torch.uint8, device="cuda")
    del scratch
    model(torch.randn(64, 1024, device="cuda")).sum().backward()
    opt.step()
    opt.zero_grad()
print("peak MiB", torch.cuda.max_memory_allocated() >> 20)
"""


OWN_HISTORY = """
import pickle, torch
torch.cuda.memory._record_memory_history(max_entries=100000)
model = torch.nn.Linear(1024, 1024).cuda()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(12):
    model(torch.randn(64, 1024, device="cuda")).sum().backward()
    opt.step()
    opt.zero_grad()
trace = torch.cuda.memory._snapshot()["device_traces"][0]
print("entries", len(trace), "first", trace[0]["action"], trace[0]["size"])
"""


def test_the_scripts_own_allocator_history_survives_dsprofs_windows(tmp_path, record_property):
    """the script's _record_memory_history: its snapshot holds the whole run under dsprof too"""
    script = write(tmp_path / "own_history.py", OWN_HISTORY)
    bare = plain(script)
    res = dsprof("run", "-q", "--wait", "1", "--warmup", "1", "--active", "2",
                 "-o", str(tmp_path / "run"), str(script))
    record_property("figure", f"plain: {bare.stdout.strip()}; dsprof: {res.stdout.strip()}")
    assert bare.returncode == 0 and res.code == 0, res.stderr[-2000:]
    assert res.stdout == bare.stdout  # the same allocations, none cleared by a window


def test_the_scripts_own_peak_reads_as_without_dsprof(tmp_path, record_property):
    """the script's max_memory_allocated(): the same under dsprof, which resets the peak per step"""
    script = write(tmp_path / "peak_log.py", PEAK_LOG)
    bare = plain(script)
    res = dsprof("run", "-q", "-o", str(tmp_path / "run"), str(script))
    record_property("figure", f"plain: {bare.stdout.strip()}; dsprof: {res.stdout.strip()}")
    assert bare.returncode == 0 and res.code == 0, res.stderr[-2000:]
    assert res.stdout == bare.stdout  # the first step's 256 MiB, not the last step's peak


def test_step_peak_matches_max_memory_allocated(fp32_run, record_property):
    """torch.cuda step peaks: steps.device_peak_bytes == max_memory_allocated() per step"""
    probe = {s["step"]: s for s in fp32_run.probe["steps"]}
    ours = dict(fp32_run.sql("SELECT step, device_peak_bytes FROM steps WHERE step > 0"))
    compared = [s for s in ours if s in probe and ours[s] is not None]
    worst = max((abs(ours[s] - probe[s]["max_allocated"]) / probe[s]["max_allocated"]
                 for s in compared), default=1.0)
    record_property("figure", f"{len(compared)} steps compared, worst diff "
                    f"{100 * worst:.3f} %; step 3: {ours.get(3)} B vs "
                    f"{probe.get(3, {}).get('max_allocated')} B")
    assert len(compared) >= len(probe) - 2, "steps missing a device peak"
    assert worst <= 0.001


def test_snapshot_live_bytes_at_peak_match_memory_allocated(fp32_run, record_property):
    """_record_memory_history snapshot: live bytes at the peak == memory_allocated() there"""
    # on CUDA a window's memory rows come from its snapshot (with stacks), not from the
    # profiler's [memory] events: this is the event-derived peak, rebuilt from the allocator's
    # recorded history
    probe = {s["step"]: s for s in fp32_run.probe["steps"]}
    window = fp32_run.profiled_steps()
    at_peak = max(probe[s]["at_peak"] for s in window)
    snaps = sorted(p.name for p in (fp32_run.path / "raw").rglob("*.snapshot.pickle"))
    ours = fp32_run.sql("SELECT max(allocated) FROM memory WHERE source = 'snapshot' "
                        "AND device = 'cuda:0'")[0][0]
    record_property("figure", f"snapshot peak {ours} B vs memory_allocated() {at_peak} B "
                    f"({len(snaps)} snapshots)")
    assert snaps, "no allocator snapshot saved for the window"
    assert ours == at_peak, f"snapshot live bytes at the peak {ours} != {at_peak}"


def test_oom_postmortem_names_the_allocation_site(runs_dir, record_property):
    """OOM observer: past mem_get_info() -> oom.json naming the allocation site"""
    run = run_probe(runs_dir, "oom", "oom_probe",
                    dsprof_args=("--wait", "1", "--warmup", "1", "--active", "6"),
                    expect_code=1)
    source = (PROBES / "oom_probe.py").read_text().splitlines()
    fill = next(i for i, line in enumerate(source, 1) if "FILL-SITE" in line)
    oom = json.loads((run.path / "oom.json").read_text())
    peak = oom["peaks"][0]
    top = peak["by_site"][0] if peak["by_site"] else {"key": "", "bytes": 0}
    snapshot = list((run.path / "raw").rglob("oom.snapshot.pickle"))
    record_property("figure", f"peak {peak['peak_bytes'] / 2**30:.1f} GiB; top site "
                    f"{top['key']} {top['bytes'] / 2**30:.1f} GiB; snapshot saved: "
                    f"{bool(snapshot)}; exit {run.result.code}")
    assert json.loads((run.path / "meta.json").read_text())["exit_error"] == "OutOfMemoryError"
    assert f"oom_probe.py:{fill}" in top["key"], f"top site {top['key']!r}, not line {fill}"
    assert top["bytes"] >= 0.9 * peak["peak_bytes"], "the filling allocation is not the peak"
    assert snapshot, "the out-of-memory observer saved no allocator snapshot"
