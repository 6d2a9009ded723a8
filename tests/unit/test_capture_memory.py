"""The bootstrap capture's memory cap (dsprof.collectors.capture_cap): the watch reads the heap
in use, which the profiler's records fill and a script's large tensors do not, and a cap passed
by memory is due at once whatever the deadline, with its reason."""

from __future__ import annotations

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

