"""What a library op that replaces a hand-written chain still costs, on CPU.

The bandwidth model of :mod:`fusion_chains` prices a fused kernel at its bytes, which on a GPU
is right. On CPU a GELU is compute-bound: ``F.gelu(x, approximate="tanh")`` measured
1.73-1.78 ns an element forward and 4.1-4.3 forward+backward on one thread (torch 2.13, this
project's machine; shapes (2048, 256), (64, 1024), (512, 512)), 45-65 % of the hand-written
chain's own time, where the bandwidth model prices the fused kernel at ~0.1 ns (x in, y out).
The fusion analyzer takes this cost off what the swap removes (fusion_mlp's hand GELU: the
bytes model alone predicted 2.3-4.6x the thread CPU time the swap saved, benchmarks/advice.py).

The library op's rate is the one its session timed on this machine at start, on one thread
(meta ``library_pace``, collectors/library_pace.py: 3.3-3.6 ns an element forward and 3.5
backward on a 2-core AMD EPYC with AVX2, twice the rate above, while the chain's own ops and
bytes cost there about what the rule gives); else, where the run itself calls the library op
(``aten::gelu`` / ``aten::gelu_backward`` elsewhere in the model), its measured time per
element; otherwise the calibrated per-element cost above, for one thread (more intra-op threads
make the library op cheaper, so the saving predicted is then a lower bound). Since the price is
the difference of two like costs, :func:`price_spread` says how far the terms' errors may move
it, and a swap it moves past the judge's band is not ranked (analyzers/fusion_cpu_price.py).

What the swap removes (:func:`cpu_swap_saving`) is priced from the chain's structure, not from
its profiled time: the ops it removes and the intermediate bytes they move, at costs measured
in training at full speed. The profile cannot price them: a chain of small ops is what the
profiler inflates most (each op, its scalar-wrapping children and each backward node is a
recorded event; the corpus's tiny GPT-2 ran 11.7 ms profiled steps against 4.5 ms at full
speed, 3.4 us of thread CPU time per recorded event, where a no-work op's span shows 0.3 us),
and under load its op times swing with the machine (the same finding on the same model
predicted 0.26 ms on a quiet machine and 0.67 ms on a loaded one). Calibration, thread CPU
time, one thread, torch 2.13, float32, the module's forward swapped in place in a training
step (forward with autograd, backward): GPT-2 tiny's NewGELU on (2, 16, 256), 2 layers, saved
0.20-0.29 ms a step (in-process A/B; `dsprof run`s of hf_gpt2, 4 per arm interleaved: 0.26;
hf_trainer's HF Trainer, blocks of 10 steps alternated in one process: 0.26)
(61 us an instance forward, 52 backward); fusion_mlp's on (2048, 256), 2 blocks, 6.86 ms
(1.90 ms an instance forward, 1.52 backward). Those were measured under load; on a quiet
machine (benchmarks/gelu_swap_cpu.py, and benchmarks/advice.py's verify arms) the same swaps
saved 0.16-0.18 ms and 4.97 ms (see the constants). The rule below gives 0.17 and 5.02 ms:

- each op removed costs 3.2 us forward (dispatch, output allocation, autograd node creation)
  and 3.7 us backward (its autograd node and the ops it runs);
- each intermediate byte costs 0.069 ns forward and 0.070 backward (14 GB/s, about half the
  copy benchmark's 26.6 GB/s: in training an intermediate is allocated, written, saved for the
  backward and read back there, its gradient likewise). Fitted on runs whose two arms took
  the same page faults (fusion_mlp as verify runs it: ~1,000 a step with or without the swap).

What those prices cannot see is the heap: glibc gives freed memory at the heap's top back to
the kernel, and a step that grows it again faults every page in (0.9 us each). Whether the
chain's intermediates are among those pages depends on the run: convnext_gelu's hand GELU took
2,500-4,000 faults a step, F.gelu in its place 500-600 (fresh processes, 4 Dec), and its swap
saved 7.4-9.5 ms against 5.02 priced without them; in other sittings the same swap saved 4.4-5.1
ms. So the run's own faults outside optimizer.step() (:func:`swap_faults`, ``steps.step_faults``),
at most the pages of the allocations the swap removes (:func:`swap_fault_pages`), are what it
*may* also take away: the finding says them and never adds them to its saving, and where they
exceed a quarter of the price it is a range, not ranked (analyzers/fusion.py ``FAULT_RANGE``).
An upper bound: the heap may fault as much without them (fusion_mlp: 480-1,016 a step with the
chain, 0-992 without).

The bytes model at the copy bandwidth with the profiled per-op cost had predicted +34 % on
GPT-2 and -40 % on fusion_mlp.

Where the rule holds, and where it does not (:func:`uncalibrated`; the analyzer then leaves the
finding out of the ranked list, with the reason). The same tanh GELU swapped in a 2-block MLP
(width 64, thread CPU time, 2 instances a step) saved 0.17 ms on 8192 elements (rule: 0.24),
3.29 ms on 262144 (3.50) and 7.71 ms on 524288 (6.87), but 0.27, 0.59 and 1.15 ms on 32768,
65536 and 131072 elements, where the rule gives 0.56, 0.98 and 1.82 ms (+58 to +105 %): tensors
of 128-512 KiB come from the allocator's free lists and stay in this machine's 4 MiB L2, so an
intermediate byte costs far less than a fresh page's (1 MiB tensors and more), and they are too
large for the per-op term to dominate as it does at 32 KiB. The erf form
(5 ops) was not fitted: its own erf and the exp in erf's backward are compute-bound, which op
count and bytes do not price (swapped, it saved 0.07 ms on 8192 elements and 9.76 ms on 524288,
where the rule gives 0.14 and 4.3 ms). Other dtypes than float32 were not measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from dsprof.metrics.ops.fusion_chains import Chain, chain_bytes, chain_numel
from dsprof.metrics.ops.opbytes import op_io

# Seconds per element on one thread (torch 2.13, CPU): forward, backward.
CALIBRATED_S_PER_ELEMENT = {
    "gelu_tanh": (1.75e-9, 2.45e-9),
    "gelu": (0.45e-9, 1.5e-9),
}
_ATEN = {"gelu_tanh": ("aten::gelu", "aten::gelu_backward"),
         "gelu": ("aten::gelu", "aten::gelu_backward")}


# What one removed op and one intermediate byte cost in a CPU training step (forward, backward):
# see the module docstring for the calibration. Refitted on a quiet machine (4 Dec, load
# 0.1-0.4; benchmarks/gelu_swap_cpu.py, and benchmarks/advice.py's verify arms): the (2048,
# 256) swap saved 4.97 ms a step measured as verify measures it (fresh runs, 6 paired rounds,
# 4.50-5.45), 5.67-7.83 in-process; the (32, 256) one 0.16-0.18 in-process (hf_trainer's verify
# 0.19, hf_gpt2's 0.10, both intervals holding 0.17). The fit before (4.5/5.1 us, 0.083 ns),
# made under load, gave 6.87 and 0.24 ms: -28 % and -60 % in the quiet judge.
OP_REMOVED_S = (3.2e-6, 3.7e-6)
INTERMEDIATE_S_PER_BYTE = (0.069e-9, 0.070e-9)
CALIBRATED_DTYPES = frozenset({"float"})
# How well either term of a swap's price is known on a machine it was not fitted on: the
# chain's ops and bytes priced 9.42 ms a step for fusion_mlp's two GELUs and cost about 9.6
# on a 2-core AMD EPYC (its swap saved 2.5 ms, its library op timed 7.14 ms: +2 %), and the
# library op's own rate moved 3-7 % between that EPYC's sittings. A price whose terms' errors
# move it by more than the judge's 25 % is said, not ranked (analyzers/fusion.py).
TERM_ERROR = 0.10
# Elements of a chain's tensor between which the rule over-predicted (in-cache intermediates).
IN_CACHE_ELEMENTS = (16384, 262144)


PAGE_BYTES = 4096


def swap_faults(run) -> float | None:
    """Mean minor page faults a step outside optimizer.step() (``steps.step_faults`` less
    ``optimizer_faults``, which the fused-optimizer price holds) over rank 0's steady steps
    that show the program's own heap (metrics/heap_steps.py: those before the first profiler
    window); None for imports and runs recorded before the column. The mean, not the median:
    whether malloc gives the pages back varies from step to step (optimizer_spans.loop_faults)."""
    from dsprof.metrics.heap_steps import program_heap_rows
    from dsprof.metrics.noise import has_column

    if not has_column(run, "steps", "step_faults"):
        return None
    rows = [int(f) - int(o or 0) for f, o in program_heap_rows(
        run, "step_faults, optimizer_faults", "step_faults")]
    return max(0.0, sum(rows) / len(rows)) if rows else None


def swap_fault_pages(chains: list[Chain]) -> int:
    """Pages the swap of ``chains`` no longer allocates: each removed intermediate written
    forward and its gradient backward, i.e. the bytes the chain moves beyond the fused op's
    (each intermediate is written once and read once), at 4 KiB a page. Only chains on tensors
    above the in-cache band (1 MiB and more in float32): smaller ones come from malloc's free
    lists, and their swaps were calibrated with no fault term (the tiny GPT-2's: 0.17 ms
    priced, 0.16-0.18 measured), while an HF Trainer step faults thousands of pages elsewhere."""
    moved = [chain_bytes(c) for c in chains if (chain_numel(c) or 0) >= IN_CACHE_ELEMENTS[1]]
    return sum(t - f for t, f in moved) // PAGE_BYTES


def fault_shares(faults: float | None, pages: dict) -> dict:
    """The faults a step each swap (key -> its pages a step) may take away: the run's
    ``faults`` split in proportion to the pages, each at most its own, so that two findings
    never claim the same fault."""
    total = sum(pages.values())
    if not faults or total <= 0:
        return dict.fromkeys(pages, 0.0)
    return {k: min(float(p), faults * p / total) for k, p in pages.items()}


@dataclass(frozen=True)
class LibraryCost:
    """Seconds per element of a library op, forward and backward, and where that came from."""

    forward_s: float
    backward_s: float
    source: str  # "timed at session start", "measured in this run" or "calibrated (one thread)"

    def seconds(self, numel: int, backward: bool) -> float:
        return numel * (self.forward_s + (self.backward_s if backward else 0.0))


def library_cost(run, library: str, profiler_cost_s: float,
                 steps_filter: str = "") -> LibraryCost | None:
    """The per-element cost of ``library`` on this CPU run: the rate its session timed on this
    machine (meta ``library_pace``, collectors/library_pace.py), else measured where the run
    calls it (each call's time less the profiler's per-op cost, over its elements), else
    calibrated; None for a library op with none. The session's timing comes first: it is the
    op alone at full speed, where a profiled call is timed in a window whose steps fault in
    the profiler's pages."""
    if library not in CALIBRATED_S_PER_ELEMENT:
        return None
    paced = session_pace(run.meta, library)
    if paced is not None:
        return LibraryCost(paced[0], paced[1], "timed at session start")
    fwd_cal, bwd_cal = CALIBRATED_S_PER_ELEMENT[library]
    measured = []
    for name in _ATEN[library]:
        rows = run.sql(f"SELECT o.dur_ns, o.input_shapes, o.dtypes FROM ops o "
                       f"WHERE o.name = ? {steps_filter}", [name])
        secs, elems = 0.0, 0
        for dur, shapes, dtypes in rows:
            io = op_io(shapes, dtypes)
            if io is None or not io.inputs:
                continue
            n = 1
            for d in io.inputs[0][0]:
                n *= d
            secs += max(0.0, dur / 1e9 - profiler_cost_s)
            elems += n
        measured.append(secs / elems if elems else None)
    # the tanh and erf forms share aten::gelu: only a run that calls the same form counts,
    # which shapes cannot tell; the measurement is used when both directions were seen
    if measured[0] is not None and measured[1] is not None:
        return LibraryCost(measured[0], measured[1], "measured in this run")
    return LibraryCost(fwd_cal, bwd_cal, "calibrated (one thread)")


def session_pace(meta: dict | None, library: str) -> tuple[float, float] | None:
    """(forward, backward) seconds an element that the session timed for ``library`` (meta
    ``library_pace``), or None: no such record (imports, GPU runs, runs recorded before it),
    or not two rates between 0 and 1 us an element (a run directory is data, never trusted),
    or timed on more than one thread."""
    pace = meta.get("library_pace") if isinstance(meta, dict) else None
    if not isinstance(pace, dict) or pace.get("threads") != 1:
        # the chain's rates (OP_REMOVED_S, INTERMEDIATE_S_PER_BYTE) are one thread's: a library
        # op timed on more (1.78 ns an element on two, 3.3 on one) is not its counterpart
        return None
    rates = pace.get(library)
    if not isinstance(rates, list) or len(rates) != 2:
        return None
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r < 1e-6
               for r in rates):
        return None
    return float(rates[0]), float(rates[1])


def price_spread(chain_s: float, library_s: float, priced_s: float) -> float:
    """How far the price ``priced_s`` (``chain_s`` the swap removes less ``library_s`` the
    library op still computes) may be off, as a share of it: each term taken as known within
    ``TERM_ERROR``, the two errors independent (root sum of squares). Infinite for a price of
    zero or less."""
    if priced_s <= 0:
        return float("inf")
    return TERM_ERROR * (chain_s ** 2 + library_s ** 2) ** 0.5 / priced_s


def spread_reason(terms: list[tuple[float, float]], n_steps: int, priced: float,
                  cost: LibraryCost, limit: float, per_step: str) -> str | None:
    """Why ``priced``, the price a step of a swap whose instances have these
    :func:`swap_terms`, is too uncertain to rank (its :func:`price_spread` over ``limit``),
    else None."""
    removed = sum(r for r, _ in terms) / n_steps
    computed = sum(k for _, k in terms) / n_steps
    spread = price_spread(removed, computed, priced)
    if spread <= limit:
        return None
    return (f"a swap priced {priced * 1e3:.2f} ms {per_step} as {removed * 1e3:.2f} ms of the "
            f"chain's ops and intermediates less {computed * 1e3:.2f} ms that the library op "
            f"still computes ({cost.source}): {TERM_ERROR:.0%} off in either term (the "
            f"chain's rate was fitted on another CPU) moves the price by "
            + ("more than all of it" if spread == float("inf") else f"{spread:.0%}"))


def cpu_swap_saving(n_ops: int, intermediate_bytes: int, numel: int, has_backward: bool,
                    cost: LibraryCost) -> tuple[float, float]:
    """(forward, backward) seconds that one instance of an ``n_ops`` chain saves on CPU when
    the library op replaces it: the ``n_ops - 1`` ops removed and the ``intermediate_bytes``
    they wrote and read, less what the library op still computes on the ``numel`` elements
    (``cost``). The backward part is 0 for a chain run without autograd."""
    removed = max(0, n_ops - 1)
    fwd = (removed * OP_REMOVED_S[0] + intermediate_bytes * INTERMEDIATE_S_PER_BYTE[0]
           - numel * cost.forward_s)
    if not has_backward:
        return fwd, 0.0
    bwd = (removed * OP_REMOVED_S[1] + intermediate_bytes * INTERMEDIATE_S_PER_BYTE[1]
           - numel * cost.backward_s)
    return fwd, bwd


def uncalibrated(library: str, numel: int, dtype: str | None,
                 has_backward: bool = True) -> str | None:
    """Why :func:`cpu_swap_saving` cannot price this chain (None: it can): the erf form, a
    dtype other than float32, a tensor size in the in-cache band, or a chain run without
    autograd (see the module docstring for the figures)."""
    if not has_backward:
        # the constants are fitted on forward + backward; the forward alone measured 10.3-10.6
        # us and 0.73-1.06 ms saved on (32, 256) and (2048, 256), where their forward half
        # gives 44 us and 1.42 ms (benchmarks/gelu_swap_cpu.py's shapes, 4 Dec)
        return (f"{library} swap without autograd (inference) on CPU: the prices are "
                "fitted on training steps, and the forward alone saved 23-75 % of their "
                "forward half")
    if library != "gelu_tanh":
        return f"{library} chain on CPU not calibrated (its own erf is compute-bound)"
    if dtype not in CALIBRATED_DTYPES:
        return f"{library} on CPU calibrated for float32, not {dtype}"
    if IN_CACHE_ELEMENTS[0] < numel < IN_CACHE_ELEMENTS[1]:
        return (f"{library} on CPU: {numel} elements, in the in-cache band "
                f"{IN_CACHE_ELEMENTS[0]}-{IN_CACHE_ELEMENTS[1]} where the rule over-predicts")
    return None


def swap_terms(chain: Chain, has_backward: bool, cost: LibraryCost) -> tuple[float, float]:
    """(what the chain's ops less one and its intermediate bytes cost in a training step, what
    the library op still computes on the chain's elements), seconds for one instance, forward
    and (``has_backward``) backward. Never from the chain's profiled time: profiled under
    load with memory recording, fusion_mlp's GELU ops ran 4x their plain-script time, and the
    tiny GPT-2's 8-op chain took 0.19 ms an instance forward, about 0.08 ms at full speed
    (metrics/ops/library_cost.py)."""
    numel = chain_numel(chain)
    if numel is None:
        return 0.0, 0.0
    total, fused = chain_bytes(chain)
    free = LibraryCost(0.0, 0.0, "")
    fwd, bwd = cpu_swap_saving(len(chain.ops), total - fused, numel, has_backward, free)
    return fwd + bwd, cost.seconds(numel, has_backward)


def library_op_saving(chain: Chain, has_backward: bool, cost: LibraryCost) -> float:
    """Seconds one instance saves when the library op replaces it on CPU, at full speed
    (:func:`swap_terms`: the chain's cost less the library op's, compute-bound on CPU, not a
    free pass over x and y)."""
    removed, computed = swap_terms(chain, has_backward, cost)
    return max(0.0, removed - computed)


def chain_dtype(chain: Chain) -> str | None:
    """The dtype of the chain's output tensor as the trace spells it (``float``, ``c10::BFloat16``),
    from its last op's first tensor input."""
    raw = chain.ops[-1].dtypes
    if not raw:
        return None
    try:
        names = json.loads(raw)
    except ValueError:
        return None
    return next((d for d in names if d and d != "Scalar"), None)
