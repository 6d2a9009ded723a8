"""What a fusible chain is named (``classify``): attention, a norm, a GELU or a softmax written
out by hand, Conv-BN, a Linear and its activation, or a plain pointwise chain. The name picks
the fix the fusion analyzer pastes (docs/analyzers.md, "Names")."""

from __future__ import annotations

from dsprof.metrics.ops.fusion_chains import CONV, MATMUL, Chain

REDUCTIONS = frozenset({"mean", "var", "sum"})
SOFTMAX_NAMES = frozenset({"softmax", "_softmax"})
# The ops each library op's written-out form is made of. A chain is named after a library op
# only when every op of it is one of these: shapes link consecutive ops of unrelated sums, and
# a PPO loss (Stable-Baselines3's: entropy by clamp -> softmax -> mul -> sum -> neg, the
# advantages' mean -> sub -> std -> div, then sub -> exp -> mul -> clamp -> mul) was named
# attention by its softmax after a Linear, and a LayerNorm by its mean and div.
NORM_OPS = frozenset({"mean", "var", "sub", "pow", "square", "mul", "add", "sqrt", "rsqrt",
                      "div", "reciprocal"})
GELU_OPS = frozenset({"mul", "pow", "add", "tanh", "erf", "div", "sub", "rsub"})
SOFTMAX_OPS = frozenset({"exp", "sum", "div", "sub", "amax", "mul", "reciprocal"})
# attention's probabilities go to the matmul with v, dropped out at most on the way
AFTER_ATTENTION_SOFTMAX = frozenset({"dropout", "dropout_"})


def classify(chain: Chain, device: bool) -> str:
    names = set(chain.names)
    names_in_order = chain.names
    before = chain.before.name if chain.before is not None else ""
    if before in CONV and chain.ops[0].name == "aten::batch_norm":
        return "fusion.conv_bn"
    if SOFTMAX_NAMES & names and before in MATMUL and _softmax_ends(names_in_order):
        return "fusion.attention"
    # a norm returns the normalised tensor; a chain that ends in its reduction computed a
    # statistic or a loss ((d * d).mul(0.5).add(eps).sqrt().mean()), which no norm replaces
    if ({"mean", "var"} & names and {"rsqrt", "sqrt", "div"} & names
            and names_in_order[-1] not in REDUCTIONS and names <= NORM_OPS):
        return "fusion.hand_norm"
    if ("tanh" in names and ({"pow", "mul"} & names) or "erf" in names) and names <= GELU_OPS:
        return "fusion.hand_gelu"
    if {"exp", "sum", "div"} <= names <= SOFTMAX_OPS:
        return "fusion.hand_softmax"
    if len(chain.ops) == 1 and before in MATMUL:
        return "fusion.linear_activation" if device else ""
    return "fusion.pointwise_chain"


def _softmax_ends(names: tuple[str, ...]) -> bool:
    """The chain's last softmax is its last op but dropout: its probabilities leave the chain
    (for the matmul with v), not for more pointwise math."""
    last = max(i for i, n in enumerate(names) if n in SOFTMAX_NAMES)
    return all(n in AFTER_ATTENTION_SOFTMAX for n in names[last + 1:])
