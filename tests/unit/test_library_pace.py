"""The library GELU's rate a CPU session times at start (meta ``library_pace``): real torch on
this CPU, the script's torch state left as it was."""

from __future__ import annotations

import pytest
import torch

from dsprof.collectors.library_pace import ELEMENTS, measure_library_pace


def test_the_library_gelu_is_timed_forward_and_backward_on_the_processes_threads():
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    pace = measure_library_pace()
    # THEN two rates an element, a few ns on any CPU this runs on, on the process's threads
    forward, backward = pace["gelu_tanh"]
    assert 0 < forward < 100e-9 and 0 < backward < 100e-9
    assert pace["threads"] == threads and pace["elements"] == ELEMENTS == 512 * 1024
    assert "best of 3" in pace["method"]
    # on one thread, in that thread's CPU time (a wall clock counts its waits for a core)
    assert pace["method"].endswith("thread CPU time" if threads == 1 else "wall time")
    # AND the process is left as the script will find it
    assert torch.get_num_threads() == threads and torch.is_grad_enabled() == grad


@pytest.mark.timing
def test_the_rate_is_the_ops_compute_not_fresh_pages():
    # GIVEN a first timing in a fresh process state and a second right after it, on one
    # thread: timed in its CPU time, which other processes' load on the machine leaves alone
    # (on two threads the wall clock is read, and a busy CI machine moved it 2x between calls)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first, second = measure_library_pace(), measure_library_pace()
    finally:
        torch.set_num_threads(threads)
    assert first["method"].endswith("thread CPU time")
    # THEN the two agree (the outputs are paged in once: a fresh 2 MiB output per call had
    # timed the backward at 6.0 ns an element, then 3.5 once malloc kept the pages)
    for a, b in zip(first["gelu_tanh"], second["gelu_tanh"]):
        assert 0.5 < a / b < 2.0


def test_a_torch_that_cannot_run_the_ops_so_records_no_pace(monkeypatch):
    # GIVEN a torch whose aten::gelu has no out= overload taking `approximate` (older builds)
    monkeypatch.setattr(torch.ops.aten, "gelu", object())
    # THEN nothing is recorded and the session goes on (the analyzer prices as before)
    assert measure_library_pace() is None


def test_on_one_thread_the_rate_is_the_threads_cpu_time(monkeypatch):
    # GIVEN a thread that waits for a core between the op's start and end: a wall clock would
    # count the wait, the thread's CPU clock does not
    import itertools
    import time

    from dsprof.collectors import library_pace

    calls, real = itertools.count(), time.perf_counter
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(library_pace.time, "perf_counter", lambda: real() + next(calls))
    pace = measure_library_pace()
    # THEN the rates stay a few ns an element: the (shifted) wall clock was not read
    assert pace["method"].endswith("thread CPU time")
    assert all(0 < r < 100e-9 for r in pace["gelu_tanh"])
