"""What swapping a hand-written chain for its library op does to peak memory.

A hand chain saves its intermediates for the backward; the library op saves its own set. What
each saves was measured with ``torch.autograd.graph.saved_tensors_hooks`` (torch 2.13, CPU, one
(2048, 256) input that requires grad, float32 and bfloat16; bytes of float32 shown, rows =
2048; ``benchmarks/swap_saved_bytes.py`` prints it):

==========================  ==================================  ============================
form                        keeps its input x (2 MiB)?          saves besides (created inside)
==========================  ==================================  ============================
hand tanh GELU              yes (``pow(x, 3)``)                 3 x 2 MiB (tanh, 0.5 x, 1+tanh)
hand erf GELU               no (``x / sqrt(2)``, ``0.5 * x``    3 x 2 MiB (x / sqrt(2), 0.5 x,
                            save nothing)                       1 + erf)
``F.gelu``                  yes                                 nothing
hand softmax, max-sub form  yes (``amax`` saves its input)      exp's output + 2 rows
hand softmax, ``x.exp()``   no                                  exp's output + 1 row
``torch.softmax``           no                                  its output (2 MiB)
hand LayerNorm (xc.pow)     no (``mean``, ``sub`` save nothing) x - mean, rstd, x-hat
hand LayerNorm (x.var)      yes                                 mean, x - mean, x-hat
``F.layer_norm``            yes                                 mean and rstd: 2 per row, in
                                                                the input's dtype on CPU
hand RMSNorm                yes (``pow``)                       rstd (a row), x * rstd
``F.rms_norm`` float32      yes                                 rstd (a row), x * rstd: the
                                                                same composite as the hand form
``F.rms_norm`` bfloat16     no                                  x, rstd and x * rstd, all
                                                                upcast to float32
==========================  ==================================  ============================

The chain's ``modules.activation_bytes`` is what autograd kept from inside its modules (never
their input, which whoever made it owns). So the swap frees, per module::

    freed = activation_bytes                                   (the chain's intermediates)
          + x   if the library op does not keep x, the chain's first op does (softmax's amax)
                and x was saved in the run: the chain was its keeper (an upper bound: another
                op may save it too)
          - x   if the library op keeps x and nothing in the run kept it (a hand LayerNorm's
                input, a residual stream: F.layer_norm adds it)
          - out if the library op keeps its output and nothing in the run saved it (softmax;
                in attention ``att @ v`` saves it anyway)
          - what else the library op saves (the table's last column)

never below 0. Whether x and the output were saved is read from the ``memory`` table: the
allocation of x's size made by the op before the chain, and of the output's size made by the
chain's last op, and their category (``activation``; the model's input and parameters stay
alive anyway). Without those rows x counts as kept and the output as not saved (the smaller
promise). On ``examples/hand_norm_softmax.py`` (2 blocks, batch 8 x 256 x 64): the two hand
softmaxes over (8, 256, 256) scores are predicted 8.03 MiB (each: exp's output, the scores only
amax kept, 2 rows; att @ v saves the output anyway) against 8.6 MiB measured by verify, the two
hand LayerNorms 0.98 MiB against 1.0 MiB (block 0's input needs no grad, so it saves only
x-hat; block 1's adds its input to what F.layer_norm keeps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from dsprof.metrics.ops.fusion_chains import Chain
from dsprof.metrics.ops.optable import Op
from dsprof.run import Run
from dsprof.units import fmt_bytes

LIBRARY_CALL = {"gelu": "F.gelu(x)", "gelu_tanh": 'F.gelu(x, approximate="tanh")',
                "softmax": "torch.softmax(x, dim=-1)", "rms_norm": "F.rms_norm",
                "layer_norm": "F.layer_norm"}

# first ops of a chain that save their (first) input, the chain's x, for their backward
SAVES_INPUT = frozenset({"aten::amax", "aten::amin", "aten::max", "aten::pow", "aten::var",
                         "aten::std"})
# categories of allocations that stay alive whatever the swap does
ALIVE_ANYWAY = frozenset({"activation", "input", "parameter"})


@dataclass(frozen=True)
class Keeps:
    """What a library op saves for its backward on one chain instance."""

    input: bool      # its input x
    output: bool     # its output
    extra: int       # bytes of what else it creates and saves
    what: str        # in words, for the explanation


def library_keeps(library: str, numel: int, rows: int, itemsize: int,
                  device: bool) -> Keeps | None:
    """What ``library`` keeps for backward on a (rows, numel / rows) input of ``itemsize``
    bytes an element (None: not measured for this case). Measured on CPU (module docstring);
    on a device run the autograd formulas of gelu, softmax and layer_norm are the same, and
    layer_norm's CUDA kernel keeps mean and rstd in float32, its accumulation type (torch's
    layer_norm.cu: ``at::empty({M}, X->options().dtype(acc_type))``; not measured here)."""
    if library in ("gelu", "gelu_tanh"):
        return Keeps(True, False, 0, "only its input")
    if library == "softmax":
        return Keeps(False, True, 0, "only its output")
    if library == "layer_norm":
        per = 4 if device else itemsize
        return Keeps(True, False, 2 * rows * per, "its input and a mean and rstd per row")
    if library == "rms_norm" and not device:
        if itemsize == 4:
            return Keeps(True, False, numel * 4 + rows * 4,
                         "its input, rstd and x * rstd (torch 2.13's CPU rms_norm backward is "
                         "the same composite as the hand form)")
        return Keeps(False, False, 2 * numel * 4 + rows * 4,
                     "x, rstd and x * rstd upcast to float32")
    return None


@dataclass
class SwapMemory:
    """What the swap frees at the peak, in bytes (0 with ``reason``), and its parts."""

    freed: int = 0
    reason: str = ""
    library: str = ""
    modules: int = 0
    saved: int = 0          # the chain modules' activation_bytes
    input_freed: int = 0    # inputs only the chain kept, which the library op does not keep
    input_added: int = 0    # inputs nothing kept, which the library op keeps
    output_added: int = 0   # outputs nothing saved, which the library op keeps
    extra: int = 0          # what else the library op saves
    keeps: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The explanation's sentence on memory ("" for a fix that is no library op)."""
        if not self.library:
            return ""
        if self.reason:
            return f" No peak-memory change is promised: {self.reason}."
        call = LIBRARY_CALL.get(self.library, self.library)
        parts = [(f"what the chain saved for its backward ({fmt_bytes(self.saved)} over "
                  f"{self.modules} module(s): their activation_bytes, one forward's)")]
        if self.input_freed:
            parts.append(f"+ {fmt_bytes(self.input_freed)} of its input, which only the chain "
                         "kept (up to: another op may keep it too)")
        if self.input_added:
            parts.append(f"- {fmt_bytes(self.input_added)} of its input, which nothing kept "
                         f"before and {call} keeps")
        if self.output_added:
            parts.append(f"- {fmt_bytes(self.output_added)} of its output, which {call} "
                         "keeps and no later op saved")
        if self.extra:
            parts.append(f"- {fmt_bytes(self.extra)} {call} saves of its own")
        keeps = "; ".join(sorted(set(self.keeps)))
        # what is saved for backward, not the forward's and backward's temporaries: the hand
        # softmaxes of examples/hand_norm_softmax.py, 8.0 MiB predicted, peaked 8.6 MiB lower
        drop = (f"the peak drops by about {fmt_bytes(self.freed)}" if self.freed else
                "nothing at the peak: the library op keeps as much")
        return f" Memory: {call} keeps {keeps}, so the swap frees " + " ".join(parts) + \
            f": {drop}."


def swap_memory(run: Run, library: str | None, chains: list[Chain], whole: bool,
                backward: bool, device: bool) -> SwapMemory:
    """What swapping ``chains`` (one per call of the finding's modules) for ``library`` frees
    at the peak (the module docstring's rule), or 0 with the reason."""
    if library is None:
        return SwapMemory()
    out = SwapMemory(library=library)
    if not any(c.module for c in chains):
        out.reason = "the trace names no module for the chain (no knob swaps it)"
    elif not whole:
        out.reason = ("the knob compiles the module (the chain is not its whole forward), and "
                      "what the compiled module saves was not measured")
    elif not backward:
        out.reason = "the chain runs without autograd here (no backward), so nothing is saved"
    elif not run.has("modules"):
        out.reason = ("the run has no modules table (what each module saved for its "
                      "backward)")
    if out.reason:
        return out
    saved = dict(run.sql("""SELECT name, max(activation_bytes) FROM modules
                            WHERE rank = 0 GROUP BY name"""))
    first: dict[str, Chain] = {}
    for c in sorted(chains, key=lambda c: (c.ops[0].rank, c.ops[0].step or 0,
                                           c.ops[0].start_ns)):
        if c.module and c.ops[0].rank == 0:
            first.setdefault(c.module, c)
    total = 0
    for module, chain in sorted(first.items()):
        part = _module_freed(run, out, library, chain, int(saved.get(module) or 0), device)
        if part is None:
            out.reason = (f"what {LIBRARY_CALL.get(library, library)} keeps for backward "
                          f"{'on a GPU' if device else 'in this dtype'} was not measured")
            return out
        total += part
    out.modules = len(first)
    out.freed = max(0, total)
    if not first:
        out.reason = "no call of the chain's modules on rank 0"
    return out


def _module_freed(run: Run, out: SwapMemory, library: str, chain: Chain, saved: int,
                  device: bool) -> int | None:
    head, last = chain.ops[0], chain.ops[-1]
    if head.io is None or not head.io.inputs:
        return None
    shape, itemsize = head.io.inputs[0]
    numel = prod(shape)
    rows = numel // shape[-1] if shape and shape[-1] else 0
    keeps = library_keeps(library, numel, rows, itemsize, device)
    if keeps is None:
        return None
    x_bytes, y_bytes = numel * itemsize, numel * (last.io.out_itemsize if last.io else itemsize)
    x_alive = _category(run, chain.before, x_bytes) if chain.before is not None else None
    y_saved = _category(run, last, y_bytes)
    freed = saved - keeps.extra
    out.saved += saved
    out.extra += keeps.extra
    out.keeps.append(keeps.what)
    if not keeps.input and head.name in SAVES_INPUT and x_alive == "activation":
        freed += x_bytes
        out.input_freed += x_bytes
    if keeps.input and x_alive is not None and x_alive not in ALIVE_ANYWAY:
        freed -= x_bytes
        out.input_added += x_bytes
    if keeps.output and y_saved not in ALIVE_ANYWAY:
        freed -= y_bytes
        out.output_added += y_bytes
    return freed


def _category(run: Run, op: Op, nbytes: int) -> str | None:
    """The category of the allocation of ``nbytes`` that ``op`` (or an op under it) made, the
    last if several (None: the run has no such row, or no memory table)."""
    if not run.has("memory"):
        return None
    rows = run.sql("""SELECT category FROM memory
                      WHERE rank = ? AND action = 'alloc' AND bytes = ?
                        AND ts_ns >= ? AND ts_ns <= ?
                      ORDER BY ts_ns DESC LIMIT 1""",
                   [op.rank, nbytes, op.start_ns, op.end_ns])
    return rows[0][0] if rows else None
