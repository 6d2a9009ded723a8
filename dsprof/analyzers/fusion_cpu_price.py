"""The claim a CPU library-op swap (a hand-written GELU -> ``F.gelu``) may make, and why not.

The price is :func:`library_cost.library_op_saving` per instance (the chain's ops and
intermediates at costs measured in training, less what the library op still computes). It is
found but not ranked, with the reason, when it is no number the judge could confirm:

- the chain is outside the calibration (:func:`library_cost.uncalibrated`: the erf form,
  another dtype, a tensor in the in-cache band);
- it is under ``MIN_PRICED_CPU_S``, where verify's measurements scatter by more than 25 %;
- this run's page faults, which the swap may or may not take away, make it a range;
- it is the difference of two like costs that either term's error moves past the limit
  (:func:`library_cost.spread_reason`: on an AVX2 EPYC the library op ran twice the
  calibrated rate, and fusion_mlp's swap saved 2.5 ms against 5.02 priced).
"""

from __future__ import annotations

from dsprof.analyzers.registry import Context
from dsprof.metrics.noise_floor import MIN_PRICED_CPU_S
from dsprof.metrics.ops.fusion_chains import chain_numel
from dsprof.metrics.ops.library_cost import (
    LibraryCost,
    chain_dtype,
    library_op_saving,
    spread_reason,
    swap_terms,
    uncalibrated,
)
from dsprof.metrics.ops.optable import OpTable
from dsprof.metrics.ops.optimizer_cost import PAGE_FAULT_S

# This run's page faults that the swap may take away make the claim a range, not a number,
# when they come to more than this share of its price (library_cost.swap_faults).
FAULT_RANGE = 0.25


def price_cpu_swap(ctx: Context, table: OpTable, library: str, items: list, cost: LibraryCost,
                   faults: float, max_spread: float) -> tuple[float, str | None, float]:
    """(saving a step, why it is not ranked or None, the page faults a step it may also take
    away, said and never added) for the chain instances ``items`` ((chain, _, _, backward
    seconds) each) swapped for ``library``, priced at ``cost``; ``faults`` is this swap's
    share of the run's faults a step (library_cost.fault_shares)."""
    faults = faults if faults >= 1 else 0.0  # under one a step: no recurring cost
    priced = sum(library_op_saving(c, b > 0, cost) for c, _, _, b in items) / table.n_steps
    # the claim is the price; the faults it may also take away are said, not added
    # (quiet judges measured the swap below price + faults)
    unknown = uncalibrated(library, chain_numel(items[0][0]) or 0, chain_dtype(items[0][0]),
                           has_backward=any(b > 0 for _, _, _, b in items))
    if unknown is None and priced < MIN_PRICED_CPU_S:
        unknown = (f"a swap priced under {MIN_PRICED_CPU_S * 1e3:.2f} ms on CPU: verify "
                   "measured such savings up to 0.08 ms away from their price and between "
                   "sittings (the tiny GPT-2's: 0.17 ms priced, 0.10-0.33 ms measured; "
                   "metrics/noise_floor.py)")
    if unknown is None and faults * PAGE_FAULT_S > FAULT_RANGE * priced:
        # whether the faults go with the chain is the heap's to say: the claim is a range
        # wider than the judge's band, so not ranked
        unknown = (f"a swap priced {priced * 1e3:.2f} ms, up to "
                   f"{(priced + faults * PAGE_FAULT_S) * 1e3:.2f} ms if this run's "
                   f"{faults:.0f} page faults {ctx.per_step} go with it: malloc decides, and "
                   "the same swap measured 4.3-8.3 ms between sittings (fusion_mlp and "
                   "convnext_gelu, priced 5.02 ms without faults; benchmarks/advice.py)")
        faults = 0.0
    if unknown is None:
        # a difference of two like costs: either one a little off on this CPU moves it past
        # the judge's band (library_cost.TERM_ERROR)
        unknown = spread_reason([swap_terms(c, b > 0, cost) for c, _, _, b in items],
                                table.n_steps, priced, cost, max_spread, ctx.per_step)
    return priced, unknown, faults
