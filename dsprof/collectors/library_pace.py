"""The library GELU's own pace on this CPU, measured once at session start (CPU runs only).

The fusion analyzer prices swapping a hand-written tanh GELU for ``F.gelu`` on CPU as what the
chain's ops and intermediates cost less what the library op still computes
(``metrics/ops/library_cost.py``). Both are a few ns an element, and the saving is their
difference, so the library op's rate decides it: ``F.gelu(x, approximate="tanh")`` ran 1.75 ns
an element forward and 2.45 backward on the machine the rule was calibrated on, and 3.3-3.6 and
3.5 on a 2-core AMD EPYC (AVX2) where the chain's own ops cost about the same (fusion_mlp:
the swap saved 4.97 ms a step there, 2.5 here, against 5.02 priced). The calibrated rate then
priced this machine's swap at twice what it saved (benchmarks/advice.py).

So a CPU session times the library op itself: ``aten::gelu`` on a float32 tensor of 524288
elements (2 MiB, fusion_mlp's activation, above the in-cache band the rule leaves out) and
``aten::gelu_backward`` on the same, each into an output paged in once (its compute, which is
what the rule subtracts; the chain's allocations are in the chain's price), a first call and
then the best of three each, with the threads the process has at start. No autograd graph is
built (the backward is called as the aten op), no module is made (the module hooks never see
it), and the tensors are freed before the script goes on past its ``import torch``. About 22 ms on one thread of that
EPYC (14 on two), beside the bandwidth copy's 20-50.
"""

from __future__ import annotations

import time
from typing import Any

from dsprof.log import logger

ELEMENTS = 512 * 1024  # float32 -> 2 MiB, fusion_mlp's (2048, 256) activation
_REPEATS = 3


def measure_library_pace() -> dict[str, Any] | None:
    """``{"gelu_tanh": [forward, backward] seconds an element, "elements", "threads",
    "method"}`` for meta.json's ``library_pace``; None where this torch cannot run the ops so
    (a build without the ``approximate`` argument): the session goes on, priced as before."""
    try:
        return _measure()
    except (RuntimeError, TypeError, AttributeError) as e:  # the analyzer falls back
        logger.debug("library pace not timed: %s: %s", type(e).__name__, e)
        return None


def _measure() -> dict[str, Any]:
    import torch

    # a generator of its own: the script's random stream (its seed, its saved RNG state) is
    # never advanced by dsprof
    x = torch.randn(ELEMENTS, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    grad = torch.ones_like(x)
    # into tensors paged in once: a fresh 2 MiB output is mmapped and faulted in on each call
    # until malloc's threshold rises (the backward timed 6.0 ns an element so, 3.5 after)
    y, g = torch.zeros_like(x), torch.zeros_like(x)
    forward, backward = torch.ops.aten.gelu.out, torch.ops.aten.gelu_backward.grad_input
    threads = torch.get_num_threads()
    # on one thread the op runs on this one: its CPU time, as the chain's rates are (a wall
    # clock also counts the time the thread waited for a core; under a loaded CI worker the
    # swap's price, the chain less this, then vanished)
    clock = time.thread_time if threads == 1 else time.perf_counter
    best = [float("inf"), float("inf")]
    for _ in range(_REPEATS + 1):  # the first call loads the kernels: not the op's pace
        t0 = clock()
        forward(x, approximate="tanh", out=y)
        t1 = clock()
        backward(grad, x, approximate="tanh", grad_input=g)
        t2 = clock()
        best = [min(best[0], t1 - t0), min(best[1], t2 - t1)]
    return {"gelu_tanh": [best[0] / ELEMENTS, best[1] / ELEMENTS], "elements": ELEMENTS,
            "threads": threads,
            "method": "aten::gelu(approximate='tanh') and aten::gelu_backward into "
                      "preallocated outputs, float32, best of 3, "
                      + ("thread CPU time" if threads == 1 else "wall time")}
