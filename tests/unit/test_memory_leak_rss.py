"""The RSS check of a CPU leak reads the steps that count: the step that writes the profiler's
trace raises the RSS once with dsprof's own export, which a slope over every step read as the
script's growth (a torch.func per-sample-gradient loop, RSS flat but for that step, was told
"Memory grows 179.3 KiB per step on cpu: a leak", high). Synthetic tables shaped like that run."""

from __future__ import annotations

from dsprof.analyzers.registry import analyze
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import steps, table

RUN = {"source": "run", "target": {"kind": "script", "name": "train.py", "argv": ["train.py"]}}
KIB = 1024
# the profiled boundaries' live bytes (the CPU timeline), rising ~180 KiB a step
LIVE = {6: 254_628, 7: 300_356, 8: 543_076, 9: 785_796}


def _run(rss_step_kib: float, trace_write_kib: float) -> Run:
    n = 40
    marks = (["setup", "first_call"] + [None] * 4 + ["warmup"] + ["window"] * 3
             + ["trace_write"] + [None] * (n - 11))
    rss, level = [], 330 << 20
    for s in range(n):
        level += int(rss_step_kib * KIB) + (int(trace_write_kib * KIB) if s == 10 else 0)
        rss.append(level)
    return Run.from_tables(
        meta=RUN, steps={**steps([12.0] * n), "disturbed_by": marks, "rss_bytes": rss,
                         "profiled": [m == "window" for m in marks]},
        allocator=table(*({"device": "cpu", "step": s, "ts_ns": s, "source": "timeline",
                           "allocated": b} for s, b in LIVE.items())))


def _leaks(run: Run) -> tuple[list, str | None]:
    out = analyze(run, only=("memory_leak",), write=False)
    assert not out.failed, out.failed
    why = next((s["reason"] for s in out.skipped if s["analyzer"] == "memory_leak"), None)
    return [f for f in out.findings if f.kind == "memory.leak"], why


def test_the_trace_writes_rss_jump_is_not_the_scripts_growth():
    # GIVEN RSS flat but for 3 KiB a step, and 5.4 MiB once at the trace-write step
    leaks, why = _leaks(_run(3, 5.4 * 1024))
    # THEN no leak: the counted steps grew 3 KiB a step
    assert leaks == [] and why is not None
    assert "the process RSS grew 3.0 KiB a step" in why and "not a leak" in why


def test_rss_that_grows_every_counted_step_still_confirms_the_leak():
    # GIVEN the same live bytes, and an RSS that grows 170 KiB every step
    leaks, _ = _leaks(_run(170, 5.4 * 1024))
    # THEN the leak stands
    assert len(leaks) == 1
