"""The smallest CPU saving dsprof ranks when it is priced, not measured in the run.

The fused optimizer and the hand-GELU swap are priced on CPU at calibrated thread-CPU costs
(``metrics/ops/optimizer_cost.py``, ``metrics/ops/library_cost.py``). What ``dsprof verify``'s
paired arms then measure for such a saving moves, for small ones, by up to about 0.1 ms from
the price and from one sitting to the next on this project's 2-core machine, quiet or not
(``benchmarks/advice.py``, three full tables on 4 and 5 Dec, thread CPU time, mean of up to 6
paired rounds): hand_attention's fused Adam, priced 0.21 ms, measured 0.22, 0.31 and 0.28;
multihead_attention's 0.26: 0.31, 0.31 and 0.28; gan's 0.31: 0.38 and 0.25; the tiny GPT-2's
GELU swap, 0.17: 0.10, 0.24 and 0.19, and under the HF Trainer 0.19, 0.21 and 0.28; the
updates priced 0.13-0.18 ms (compiled, grad_accumulation, lightning_trainer) 0.03-0.08 ms
above their price in five runs each. Savings of 0.5 ms and more (conv1d_transformer, vit, unet,
the HF models' AdamW, the held-out mixture of experts) stayed within 25 % in the same tables.
A claim to 25 % needs that 0.08 ms offset under a quarter of it: 0.32 ms. Below, the finding is
given with its estimate and fix, outside the ranked list ("impact unknown; verify to
measure").
"""

from __future__ import annotations

MIN_PRICED_CPU_S = 0.32e-3
