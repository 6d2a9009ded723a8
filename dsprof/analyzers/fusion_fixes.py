"""What the fusion analyzer pastes and applies: the library op that replaces a hand-written
chain, whether a module is the chain and nothing else, and the fix's code (what the swap frees
at the peak: :mod:`dsprof.metrics.memory.library_swap`). Split from :mod:`fusion`, which finds
and prices the chains."""

from __future__ import annotations

import math

from dsprof.metrics.ops.fusion_chains import VIEWS, Chain
from dsprof.metrics.ops.optable import Op
from dsprof.render.safe_text import python_attr

# What calling a compiled module forward costs over eager on CPU, forward and backward (guards,
# the AOTAutograd wrapper, the kernel call): 85-109 us a call for a 2-op module measured on
# this project's machine (torch 2.13, one thread), against ~10 us an eager op. A compile fix
# on CPU saves only what fusing wins beyond it.
COMPILED_CALL_S = 90e-6

# Library ops that save nothing on CPU (torch 2.13): aten::rms_norm runs _fused_rms_norm
# forward, then the composite pow/mean/rsqrt/mul backward; swapped in training it saved -11 us
# (hf_t5, 12 norms) and +4 us (hf_llama, 5 norms) a step. Found, with no saving.
NO_SAVING_ON_CPU = frozenset({"rms_norm"})

# Kinds whose library op is compute-bound on CPU (metrics/ops/library_cost.py): the saving is
# what the swap removes less what the library op still computes, not the intermediates' bytes.
CPU_COMPUTE_BOUND_KINDS = frozenset({"fusion.hand_gelu"})


def library_op(kind: str, names: tuple[str, ...]) -> str | None:
    """The ``DS_LIBRARY_OP`` op that the fix of ``kind`` pastes (None: no knob runs it)."""
    if kind == "fusion.hand_gelu":
        return "gelu_tanh" if "tanh" in names else "gelu"
    if kind == "fusion.hand_norm":
        return "layer_norm" if "sub" in names else "rms_norm"
    if kind == "fusion.hand_softmax":
        return "softmax"
    return None


def whole_module(chain: Chain, sequence: list[Op]) -> bool:
    """Whether the chain is all its module computes: every op of the forward sequence run in
    the chain's module (or below it) is a chain op, a view or scalar bookkeeping. Only then
    can the library op stand in for the module's forward."""
    holder = chain.module
    if not holder:
        return False
    ids = {op.id for op in chain.ops}
    for op in sequence:
        if op.module is None or not (op.module == holder or op.module.startswith(holder + ".")):
            continue
        if op.id in ids or op.name in VIEWS:
            continue
        if op.io is not None and op.io.inputs and all(
                math.prod(shape) <= 1 for shape, _ in op.io.inputs):
            continue
        return False
    return True


# Where a run that compiles finds a chain in no module: module paths are off under
# torch.compile, and an eager chain there ran outside the compiled code (around the compiled
# model, or after a graph break). Compiling the model again is no fix.
OUTSIDE_COMPILED = "(outside the compiled code)"
UNATTRIBUTED = "(no module)"
"""Where a chain's ops ran outside modules, or the trace recorded none (old imports)."""


def fix_text(kind: str, where: str, chain_txt: str, chain: Chain,
             modules_recorded: bool = True) -> tuple[str, str]:
    """(title, code to paste). ``modules_recorded``: the trace records module calls, so a
    chain in no module ran outside every module's forward (else its module is unknown)."""
    compile_fix = (f"# compile the module that holds the chain (fuses forward and backward)\n"
                   f"{_attr(where)}.compile()   # or: torch.compile(model)")
    if where == OUTSIDE_COMPILED:
        compile_fix = (
            "# the run compiles already: this chain ran eagerly, outside the compiled code.\n"
            "# Compile the function that computes it as well (the loss, say), or find the\n"
            "# graph break that left it out: TORCH_LOGS=graph_breaks python train.py\n"
            "loss_fn = torch.compile(loss_fn)")
    elif where == UNATTRIBUTED and modules_recorded and kind != "fusion.conv_bn":
        # model.compile() compiles forward() calls: math in the loop, a loss function or a
        # method called without the module's __call__ (a distribution's entropy) stays eager
        compile_fix = ("# no module's forward runs this chain: compile the function that "
                       "computes it (the loss, say)\nloss_fn = torch.compile(loss_fn)")
    names = set(chain.names)
    if kind == "fusion.attention":
        return (f"Use F.scaled_dot_product_attention in {where} (hand-written attention)",
                "y = torch.nn.functional.scaled_dot_product_attention(q, k, v, "
                "attn_mask=mask, is_causal=...)  # replaces matmul/scale/mask/softmax/matmul\n"
                + compile_fix)
    if kind == "fusion.hand_norm":
        layer = "nn.LayerNorm" if "sub" in names else "nn.RMSNorm"
        return (f"Replace the hand-written norm in {where} with {layer}",
                f"self.norm = torch.{layer}(width)   # one fused kernel\n" + compile_fix)
    if kind == "fusion.hand_gelu":
        approx = ', approximate="tanh"' if "tanh" in names else ""
        return (f"Replace the hand-written GELU in {where} with F.gelu",
                f"y = torch.nn.functional.gelu(x{approx})\n" + compile_fix)
    if kind == "fusion.hand_softmax":
        return (f"Replace the hand-written softmax in {where} with torch.softmax",
                "y = torch.softmax(x, dim=-1)\n" + compile_fix)
    if kind == "fusion.conv_bn":
        return (f"Fuse Conv-BatchNorm{'-ReLU' if len(chain.ops) > 1 else ''} in {where}",
                "# training: compile the block (BN + ReLU fuse into one pass)\n" + compile_fix
                + "\n# inference: fold BN into the conv weights\n"
                "model = torch.fx.experimental.optimization.fuse(model.eval())")
    if kind == "fusion.linear_activation":
        return (f"Fuse the Linear and its activation in {where}",
                "# cuBLASLt epilogue fusion via torch.compile(mode='max-autotune')\n" + compile_fix)
    return (f"Fuse {len(chain.ops)} pointwise ops ({chain_txt}) in {where}", compile_fix)


def _attr(path: str) -> str:
    """``M.blocks.*.act`` -> ``model.blocks[i].act`` for the fix text; a name that is not an
    identifier (a ModuleDict key, or a hostile run directory's text) as ``getattr``."""
    out = "model"
    for p in path.split(".")[1:]:
        if p == "*":
            out += "[i]"
        elif p.isascii() and p.isdigit():
            out += f"[{p}]"
        else:
            out = python_attr(out, p)
    return out

