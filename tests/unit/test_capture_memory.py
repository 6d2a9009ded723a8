"""The bootstrap capture's memory cap (dsprof.collectors.capture_cap): the watch reads the heap
in use, which the profiler's records fill and a script's large tensors do not, and a cap passed
by memory is due at once whatever the deadline, with its reason."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch

from dsprof.collectors import capture_cap
from dsprof.collectors.capture_cap import MEMORY, TIME, CaptureCap, MemoryWatch, heap_bytes

glibc = pytest.mark.skipif(capture_cap._MALLINFO2() is None,
                           reason="no mallinfo2 (not glibc >= 2.33): the watch reads the RSS")


def _watch(limit_mib: int) -> tuple[MemoryWatch, threading.Event, list[int]]:
    fired, grown = threading.Event(), []
    watch = MemoryWatch(limit_mib * 2**20, lambda g: (grown.append(g), fired.set()))
    assert watch.start()
    return watch, fired, grown


@glibc
def test_what_the_profiler_records_fills_the_heap_the_watch_reads():
    # GIVEN a watch with a 32 MiB limit
    watch, fired, grown = _watch(32)
    try:
        # WHEN the profiler records a loop of small ops (no step, as before a first boundary)
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                      record_shapes=True)
        prof.start()
        try:
            deadline = time.perf_counter() + 30
            while not fired.is_set() and time.perf_counter() < deadline:
                for _ in range(200):
                    torch.randn(16, 16).tanh().sum()
        finally:
            prof.stop()
        # THEN the watch fired once, past its limit, in well under the 30 s
        assert fired.is_set() and len(grown) == 1 and grown[0] > 32 * 2**20
    finally:
        watch.stop()


@glibc
def test_large_tensors_of_the_script_leave_the_heap_as_it_was():
    # GIVEN a watch with a 64 MiB limit
    watch, fired, _ = _watch(64)
    try:
        before = heap_bytes()
        # WHEN the script keeps 256 MiB in 64 MiB tensors (a dataset, weights: malloc maps
        # each on its own, past its largest threshold)
        kept = [torch.ones(16 * 2**20) for _ in range(4)]
        time.sleep(5 * capture_cap.MEMORY_POLL_S)
        # THEN the heap barely moved and the watch did not fire
        assert heap_bytes() - before < 16 * 2**20
        assert not fired.is_set()
        del kept
    finally:
        watch.stop()


def test_a_cap_passed_by_memory_is_due_now_and_says_why():
    # GIVEN a capture cap with an hour to run and a memory limit, checked as the timeline does
    reached = []
    cap = CaptureCap(3600.0, lambda: reached.append(True), module_hooks=False,
                     max_bytes=2**40)
    try:
        cap.check()
        assert reached == [] and cap.reason is None
        # WHEN the watch finds the heap past the limit (as its thread would call it)
        cap._memory_over(80 * 2**20)
        cap.extend(10**12)  # a compile's time moves the deadline, not a memory cap
        cap.check()
        # THEN the cap is reached once, by memory, and the warning says how much
        assert reached == [True] and cap.reason == MEMORY
        assert "heap grew 80 MiB" in cap.why() and "--max-capture-mb" in cap.why()
    finally:
        cap.remove()


def test_a_cap_passed_by_time_says_so():
    reached = []
    cap = CaptureCap(0.0, lambda: reached.append(True), module_hooks=False, max_bytes=None)
    try:
        cap.check()
        assert reached == [True] and cap.reason == TIME and "--max-capture raises" in cap.why()
    finally:
        cap.remove()


def test_the_summary_says_where_a_capped_setup_capture_went_from_the_runs_settings():
    from dsprof.reports.summary import summarize
    from dsprof.run import Run
    from tests.unit.test_run_layer import _steps

    # GIVEN a run whose capture of step 0 stopped by memory and was set aside, and whose meta
    # has the cap only in its settings (what a merge of ranks keeps)
    windows = [{"index": 0, "kind": "setup", "steps": [0], "capped": True,
                "capped_by": "memory", "file": "setup/window-0.trace.json"},
               {"index": 1, "kind": "window", "steps": [3]}]
    run = Run.from_tables(steps=_steps([500, 30, 10, 10, 10]), meta={
        "source": "run", "status": "finished", "steps_source": "optimizer",
        "settings": {"wait": 0, "warmup": 0, "max_capture_mb": 32.0}, "windows": windows})
    # THEN the summary says why it stopped and where it went, and counts no setup window
    summary = summarize(run)
    (note,) = [n for n in summary.notes if "first step stopped before that step" in n]
    assert "the process's heap grew 32.0 MiB" in note and "raw/rank0/setup" in note
    assert summary.facts["windows"] == [[3]]



# -- the alarm never stops the profiler inside an op ------------------------------------------


def _inside_an_op(w, check):
    """``check(frame)`` called inside exp's record, from the pack hook exp's result is saved
    through (the hooks in use, as when the alarm's handler interrupts one)."""
    seen: list = []

    def pack(t):
        seen.append(check(sys._getframe()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.exp(w)
    return seen[0]


def test_python_torch_runs_inside_its_ops_is_told_from_the_scripts_own():
    w = torch.randn(8, 8, requires_grad=True)
    # a saved-tensor pack hook runs inside the op that saves (exp saves its result)
    assert _inside_an_op(w, capture_cap.inside_an_op)
    # a tensor hook runs inside the autograd engine's node, under backward()
    in_backward: list = []
    y = (w * 2).sum()
    w.register_hook(lambda g: in_backward.append(capture_cap.inside_an_op(sys._getframe())))
    y.backward()
    assert in_backward == [True]
    # the script's own code between two ops is a clean point
    assert not capture_cap.inside_an_op(sys._getframe())


def test_the_alarm_puts_off_a_ring_that_finds_an_op_under_way(monkeypatch):
    # GIVEN an alarm armed on the main thread whose cap has passed (its timer rings far later)
    monkeypatch.setattr(capture_cap, "INSIDE_OP_RETRY_S", 3600.0)  # no real ring meanwhile
    fired: list[int] = []
    deadline = [float("inf")]
    alarm = capture_cap.CapAlarm(lambda: deadline[0], lambda: fired.append(1))
    assert alarm.arm()
    try:
        deadline[0] = float("-inf")
        w = torch.randn(8, 8, requires_grad=True)
        # WHEN it rings while the main thread packs a saved tensor (pytorch/examples' GAT:
        # "aten::mul (Triggered internally at .../collection.cpp:664)" on its stderr)
        _inside_an_op(w, lambda frame: alarm._handler(capture_cap.SIGNAL, frame))
        # THEN the cap is put off: the alarm rings again later (INSIDE_OP_RETRY_S)
        assert fired == [] and alarm._timer is not None
        # AND at a clean point it is kept
        alarm._handler(capture_cap.SIGNAL, sys._getframe())
        assert fired == [1]
        # AND where every ring finds an op (Python inside every op: DEBUG's dispatch watch),
        # it is kept once INSIDE_OP_MAX_S has passed since the first one put off
        monkeypatch.setattr(capture_cap, "INSIDE_OP_MAX_S", 0.0)
        _inside_an_op(w, lambda frame: alarm._handler(capture_cap.SIGNAL, frame))
        assert fired == [1, 1]
    finally:
        alarm.disarm()
