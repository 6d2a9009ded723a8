"""Finding fusible op chains in a forward sequence, and what fusing one saves.

The rule (documented in docs/analyzers.md): walking one (rank, thread, step)'s top-level
forward ops in start order, view ops (``view``, ``transpose``, ...) and pointwise ops on
one-element tensors (counters) are skipped, and a *chain*
is a maximal run of consecutive fusible ops where each op consumes the previous one's output:

- after a pointwise op, the next op must have an input of exactly its output shape (the
  broadcast of its inputs), or, when view ops came between, an input with as many elements;
- after a reduction or normalization (``mean``, ``softmax``, ``batch_norm``), the next fusible
  op is taken as its consumer (its output shape is not recorded; the next op's inputs are).

Kineto records shapes, not tensor identities, so "each output feeds only the next" is what
consecutive order plus matching shapes can show; an intermediate that some later op also reads
would still be written by a fused kernel, which makes the estimate an upper bound there.

Saving of one chain of n ops, with B the bandwidth and c the per-op overhead: each op's memory
time is ``m_i = min(t_i - c, bytes_i / B)`` (an op faster than its bytes allow is
cache-resident, and its time is the bound); the fused kernel moves only the chain's external
inputs and its final output, ``m_f = min(bytes_f / B, sum m_i)``; the forward saving is
``sum m_i - m_f + (n - 1) (c - p)``, p being what the profiler adds per op (the ops of a
full-speed step do not pay it). The chain's backward nodes (same autograd seq) are fused by the
same compile and costed the same way (:func:`backward_saving`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsprof.metrics.ops.optable import Op

_A = "aten::"
POINTWISE = frozenset(_A + n for n in (
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "exp", "exp_",
    "log", "log_", "log1p", "expm1", "sigmoid", "sigmoid_", "tanh", "tanh_", "relu", "relu_",
    "gelu", "gelu_", "silu", "silu_", "mish", "pow", "pow_", "sqrt", "rsqrt", "abs", "square",
    "clamp", "clamp_", "clamp_min", "clamp_max", "where", "masked_fill", "masked_fill_",
    "maximum", "minimum", "reciprocal", "erf", "sin", "cos", "threshold", "leaky_relu",
    "leaky_relu_", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "elu", "softplus",
    "lerp", "addcmul", "addcdiv", "dropout", "sign", "floor", "ceil", "eq", "ne", "gt", "lt",
    "ge", "le", "logical_not", "logical_and", "logical_or", "bitwise_not", "bitwise_and",
    "bitwise_or"))
# Same output shape as the first input, but each output element reads a whole row.
NORMALIZING = frozenset(_A + n for n in ("softmax", "_softmax", "log_softmax", "batch_norm"))
# Output much smaller than the input (the reduced dims); its bytes are not counted.
REDUCTION = frozenset(_A + n for n in ("mean", "sum", "amax", "amin", "var", "std", "logsumexp"))
FUSIBLE = POINTWISE | NORMALIZING | REDUCTION
VIEWS = frozenset(_A + n for n in (
    "view", "reshape", "_unsafe_view", "transpose", "t", "permute", "expand", "expand_as",
    "unsqueeze", "squeeze", "slice", "select", "as_strided", "narrow", "flatten", "unflatten",
    "view_as", "alias", "detach", "split", "chunk", "unbind", "lift_fresh", "numpy_T"))
MATMUL = frozenset(_A + n for n in ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "einsum"))
CONV = frozenset(_A + n for n in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution",
                                  "mkldnn_convolution", "cudnn_convolution"))
ACTIVATIONS = frozenset(_A + n for n in ("relu", "relu_", "gelu", "silu", "silu_", "sigmoid",
                                         "tanh", "hardswish", "leaky_relu", "mish"))


@dataclass(frozen=True)
class Chain:
    ops: tuple[Op, ...]
    before: Op | None
    """The op just before the chain (views skipped): the conv, matmul or linear it follows."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(op.short for op in self.ops)

    @property
    def module(self) -> str | None:
        """The innermost module holding every op of the chain (what DS_COMPILE compiles)."""
        return common_module([op.module for op in self.ops])


def common_module(paths: list[str | None]) -> str | None:
    if not paths or any(p is None for p in paths):
        return None
    parts = [p.split(".") for p in paths]  # type: ignore[union-attr]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common) or None


def _out_bytes(op: Op) -> int:
    if op.io is None or op.name in REDUCTION:
        return 0
    if op.name in NORMALIZING and op.io.inputs:
        shape, size = op.io.inputs[0]
        n = 1
        for d in shape:
            n *= d
        return n * size
    return op.io.out_bytes


def _out_numel(op: Op) -> int | None:
    if op.io is None or op.name in REDUCTION:
        return None
    if op.name in NORMALIZING and op.io.inputs:
        n = 1
        for d in op.io.inputs[0][0]:
            n *= d
        return n
    return op.io.out_numel


def _feeds(prev: Op, nxt: Op, through_view: bool) -> bool:
    if prev.name in REDUCTION:
        # its output's shape is not recorded, but it has fewer elements than its input, and
        # its element size: the next op must take something like that (``x - x.mean(-1,
        # keepdim=True)`` does; ``t.tanh()`` or ``t * 0.5`` of a new batch after ``u.sum(0)``
        # does not, the 0.5 being a 0-dim double: that chained every iteration of a
        # preprocessing loop into one "chain" of 80,750 ops)
        if prev.io is None or nxt.io is None or not prev.io.inputs:
            return True
        reduced, size = prev.io.inputs[0]
        return any(_numel(shape) < _numel(reduced) and itemsize == size
                   for shape, itemsize in nxt.io.inputs)
    if prev.name in NORMALIZING and prev.name != "aten::batch_norm":
        return True
    if prev.io is None or nxt.io is None:
        return False
    if prev.name in NORMALIZING:  # batch_norm: output has its input's shape
        target = prev.io.inputs[0][0] if prev.io.inputs else None
    else:
        target = prev.io.out_shape
    if target is None:
        return False
    if any(shape == target for shape, _ in nxt.io.inputs):
        return True
    numel = _out_numel(prev)
    return through_view and any(_numel(s) == numel for s, _ in nxt.io.inputs)


def chain_numel(chain: Chain) -> int | None:
    """Elements of the chain's output (its last op's), or None when not recorded."""
    return _out_numel(chain.ops[-1])


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def find_chains(sequence: list[Op], called: frozenset[str] | None = None) -> list[Chain]:
    """Maximal chains in one forward sequence: two or more fusible ops with at least one
    pointwise op, or a lone batch_norm / activation right after a conv / linear (those pairs
    are named by the analyzer).

    Args:
        called: the module paths the trace shows being called. A chain never grows past a
            point where the module holding all its ops would be one never called (a
            ModuleList, say: the residual add ending block 0 and the norm starting block 1),
            since there would be no module to compile.
    """
    chains: list[Chain] = []
    current: list[Op] = []
    side: list[Op] = []  # pointwise ops on side inputs (a mask's ~), waiting for a consumer
    # the module holding current's and side's ops, kept as ops join (a chain of n ops checked
    # from scratch at each op cost n^2: minutes on a long chain)
    held: list[str | None] = []
    before: Op | None = None
    last_real: Op | None = None
    through_view = False

    def may_join(op: Op) -> bool:
        if called is None:
            return True
        holder = common_module([*held, op.module])
        return holder is None or holder in called

    def close() -> None:
        if not current:
            return
        lone_ok = len(current) == 1 and before is not None and (
            (current[0].name == "aten::batch_norm" and before.name in CONV)
            or (current[0].name in ACTIVATIONS and before.name in MATMUL))
        if (len(current) >= 2 and any(op.name in POINTWISE for op in current)) or lone_ok:
            chains.append(Chain(tuple(current), before))

    for op in sequence:
        if op.name in VIEWS:
            through_view = True
            continue
        if (op.name in FUSIBLE and op.io is not None and op.io.inputs
                and all(_numel(shape) <= 1 for shape, _ in op.io.inputs)):
            continue  # scalar bookkeeping (BatchNorm's num_batches_tracked += 1)
        # the op must take the chain's last output: a side op alone feeding it would let
        # unrelated ops in (a loop's next sample, its pointwise op parked as a side op)
        if (op.name in FUSIBLE and current and _feeds(current[-1], op, through_view)
                and may_join(op)):
            held = [common_module([*held, *(o.module for o in side), op.module])]
            current.extend(side)
            current.append(op)
            side = []
        elif op.name in POINTWISE and current and len(side) < 2 and may_join(op):
            side.append(op)
        else:
            close()
            # parked side ops that this op consumes start the next chain with it (the next
            # sample's ``x * 0.5 + 1``, parked while the last sample's mean ended its chain)
            start = _fed_tail(side, op, through_view) if op.name in FUSIBLE else []
            current = [*start, op] if op.name in FUSIBLE else []
            held = [common_module([o.module for o in current])] if current else []
            side = []
            before = None if start else last_real
        last_real = op
        through_view = False
    close()
    return chains


def _fed_tail(side: list[Op], op: Op, through_view: bool) -> list[Op]:
    """The parked ops ending with the last one that feeds ``op``, each feeding the next, or
    [] when none feeds it."""
    for i in range(len(side) - 1, -1, -1):
        if _feeds(side[i], op, through_view):
            tail = [side[i]]
            for earlier in reversed(side[:i]):
                if not _feeds(earlier, tail[0], False):
                    break
                tail.insert(0, earlier)
            return tail
    return []


def chain_bytes(chain: Chain) -> tuple[int, int]:
    """(bytes the ops move one by one, bytes a fused kernel moves).

    An input is internal to the fused kernel when an earlier op of the chain produced a
    tensor of its size (right after a reduction, whose output size is not recorded: the
    op's smallest input); the rest, and the last op's output, are external.
    """
    total = sum((op.io.in_bytes if op.io else 0) + _out_bytes(op) for op in chain.ops)
    fused = 0
    produced: set[int] = set()
    for k, op in enumerate(chain.ops):
        if op.io is None:
            continue
        inputs = list(op.io.inputs)
        sizes = [_numel(shape) for shape, _ in inputs]
        internal = {j for j, n in enumerate(sizes) if n in produced}
        if k > 0 and chain.ops[k - 1].name in REDUCTION and sizes:
            internal.add(sizes.index(min(sizes)))
        fused += sum(_numel(s) * b for j, (s, b) in enumerate(inputs) if j not in internal)
        numel = _out_numel(op)
        if numel is not None:
            produced.add(numel)
    fused += _out_bytes(chain.ops[-1])
    return total, min(fused, total)


def _memory_time(ops: tuple[Op, ...] | list[Op], bandwidth: float, overhead: float) -> float:
    return sum(min(max(op.time_s - overhead, 0.0),
                   ((op.io.in_bytes if op.io else 0) + _out_bytes(op)) / bandwidth)
               for op in ops)


def chain_saving(chain: Chain, bandwidth: float, overhead: float,
                 profiler_cost: float = 0.0) -> tuple[float, float]:
    """(forward seconds saved, forward seconds the chain takes now), for one instance.

    ``overhead`` is the per-op fixed cost as measured (profiled); ``profiler_cost`` the part
    of it the profiler adds, which a full-speed run does not pay and fusing does not save.
    """
    mem = _memory_time(chain.ops, bandwidth, overhead)
    _, fused = chain_bytes(chain)
    fused_mem = min(fused / bandwidth, mem)
    saving = mem - fused_mem + (len(chain.ops) - 1) * max(0.0, overhead - profiler_cost)
    now = sum(op.time_s for op in chain.ops)
    return min(max(saving, 0.0), now), now


def backward_saving(chain: Chain, backward: list[Op], backward_now: float, bandwidth: float,
                    overhead: float, profiler_cost: float = 0.0) -> float:
    """Seconds saved in the chain's backward, for one instance.

    The fused backward kernel reads what the forward kernel read plus the output's gradient and
    writes the input's gradient: about the fused forward bytes plus one output. The aten ops the
    backward nodes run now are costed like forward ops (memory time each); autograd's own
    per-node cost (node time not spent in its ops) goes too, but for one node.
    """
    if not backward or backward_now <= 0:
        return 0.0
    mem = _memory_time(backward, bandwidth, overhead)
    _, fused = chain_bytes(chain)
    fused_mem = min((fused + _out_bytes(chain.ops[-1])) / bandwidth, mem)
    in_ops = sum(op.time_s for op in backward)
    nodes = max(1, len(chain.ops))
    # Each node is two recorded spans (evaluate_function and the node) around its ops.
    autograd = max(0.0, backward_now - in_ops - 2 * nodes * profiler_cost) * (1 - 1 / nodes)
    saving = (mem - fused_mem + (len(backward) - 1) * max(0.0, overhead - profiler_cost)
              + autograd)
    return min(max(saving, 0.0), backward_now)
