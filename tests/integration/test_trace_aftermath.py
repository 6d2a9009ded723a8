"""What a profiler window leaves behind in the steps after it (issue 19). torch.profiler's
``profile`` object is in reference cycles, so its Kineto results outlived the window until the
run exited: they pinned the heap's top above the window's freed event buffers, the steps after
``trace_write`` took thousands of fresh pages (fusion_mlp: 4,000-9,700 against a steady median
of 1,000-1,800) and ran up to 2.7x the median, counted as the program's own. The timeline now
frees them in the ``trace_write`` step (collectors/timeline.py ``release_results``). Real torch,
a real ``dsprof run``; the script reads glibc's own count of the bytes malloc holds in use."""

from __future__ import annotations

import json

import pytest

import dsprof as api
from tests.integration.helpers import dsprof, meta, write

pytestmark = [pytest.mark.slow, pytest.mark.timed_runs]

HEAP_LOOP = """
import ctypes
import json
import sys

import torch
from torch import nn


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64), nn.GELU(),
                      nn.Linear(64, 10))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
in_use = []
for _ in range(12):
    x = torch.randn(512, 64)
    loss = nn.functional.cross_entropy(model(x), x[:, :10].argmax(1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()  # dsprof's boundary runs in here: the window's trace is written in it
    in_use.append(libc.mallinfo2().uordblks)
with open(sys.argv[1], "w") as f:
    json.dump(in_use, f)
"""
MIB = 2**20


def _has_mallinfo2() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc 2.33+ (mallinfo2)")
def test_the_window_leaves_nothing_on_the_heap_for_the_steps_after_it(tmp_path):
    # GIVEN a training loop profiled over a window (steps 5-6), reading the heap in use after
    # every step's boundary
    script = write(tmp_path / "heap_loop.py", HEAP_LOOP)
    heap, out = tmp_path / "heap.json", tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), "--wait", "3", "--warmup", "1", "--active", "2",
                 str(script), str(heap))
    assert res.code == 0, res.stderr[-2000:]
    in_use = json.loads(heap.read_text())
    (window,) = meta(out)["windows"]
    first, last = min(window["steps"]), max(window["steps"])
    # WHEN the heap before the profiler's warm-up is compared with the heap after the window's
    # trace was written (the boundary that ends step `last` writes it)
    before = in_use[first - 2]
    after = in_use[last:]
    # THEN the steps after it run on the heap they had before: the profiler's results were
    # freed in the trace_write step (kept, they held 4.2 MiB here, and 14 MiB for fusion_mlp)
    assert max(after) - before < 1 * MIB, [round(v / MIB, 2) for v in in_use]
    # AND the steps after trace_write are steady unless their faults say otherwise
    with api.load(out) as run:
        marks = dict(run.sql("SELECT step, disturbed_by FROM steps WHERE rank = 0"))
    assert marks[last + 1] == "trace_write"
    assert all(marks[s] in (None, "trace_aftermath") for s in range(last + 2, len(marks)))
