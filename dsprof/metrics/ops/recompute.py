"""Forward work that activation checkpointing re-runs inside a backward node.

With ``torch.utils.checkpoint`` (``use_reentrant=False``, what transformers'
``gradient_checkpointing=True`` runs by default), the first backward node that unpacks a saved
tensor of a checkpointed region recomputes the region's whole forward, nested inside that
node's ``autograd::engine::evaluate_function`` span: a GPT-2 block's ``MulBackward0`` (its
last dropout) took 5.86 ms, of which the block's recomputed forward (``ln_1``, ``attn``,
``ln_2``, ``mlp`` module spans and the ops between them) was nearly all, while the
multiplication itself is microseconds. Charged to the dropout, that made a dropout -> add
chain's backward 41.95 ms a step against 3.96 ms forward (fusion analyzer, a tiny GPT-2 under
the HF Trainer with gradient checkpointing).

A recompute is recognised by the module spans it runs (dsprof's module annotations, or the
``nn.Module:`` spans of an imported trace recorded with ``with_modules``): a backward node
unpacks its saved tensors, which runs the recompute, before its own formula, so everything in
it from its start to the first op after the last outermost module span is the recomputed
forward (checkpoint's own work, RNG state, frames and unpacking, included), not the node's
backward. On host
time that window is taken off the node; on device time, the kernels of the spans in it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from dsprof.run import Run

EVALUATE = "autograd::engine::evaluate_function:"


@dataclass
class Recompute:
    """Per backward node (rank, evaluate_function op id): the outermost spans of the forward
    it re-ran, as (rank, op id, duration ns): their time is not the node's; and every op inside
    such a re-run."""

    outermost: dict[tuple[int, int], list[tuple[int, int, int]]] = field(default_factory=dict)
    inside: set[tuple[int, int]] = field(default_factory=set)
    window_ns: dict[tuple[int, int], int] = field(default_factory=dict)  # host time of the re-run


def _is_module(cat: str, name: str) -> bool:
    return cat == "module" or name.startswith("nn.Module: ")


def find_recompute(run: Run, steps_filter: str = "") -> Recompute:
    """The recomputed forward of every backward node of the (filtered) steps; empty when no
    module span runs in the backward phase (no checkpointing, or no module spans)."""
    out = Recompute()
    if not run.sql(f"""SELECT EXISTS (SELECT 1 FROM ops o WHERE o.phase = 'backward'
                       AND (o.cat = 'module' OR o.name LIKE 'nn.Module: %') {steps_filter})""")[0][0]:
        return out
    rows = run.sql(f"""SELECT o.rank, o.id, o.parent_id, o.cat, o.name, o.start_ns, o.dur_ns
                       FROM ops o WHERE o.phase = 'backward' {steps_filter}""")
    children: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    info: dict[tuple[int, int], tuple[str, str, int, int]] = {}
    for rank, op_id, parent, cat, name, start, dur in rows:
        key = (int(rank), int(op_id))
        info[key] = (cat or "", name or "", int(start), int(start) + int(dur or 0))
        if parent is not None:
            children[(int(rank), int(parent))].append(key)
    for node, (_cat, name, _s, _e) in info.items():
        if not name.startswith(EVALUATE):
            continue
        subtree, tops = [], []
        stack = list(children.get(node, ()))
        while stack:  # depth-first; a module span's own subtree is not searched for modules
            key = stack.pop()
            subtree.append(key)
            cat, child_name, _, _ = info[key]
            if _is_module(cat, child_name):
                tops.append(key)
                stack_inside = list(children.get(key, ()))
                while stack_inside:
                    k = stack_inside.pop()
                    subtree.append(k)
                    stack_inside.extend(children.get(k, ()))
            else:
                stack.extend(children.get(key, ()))
        if not tops:
            continue
        # the node unpacks its saved tensors (running the recompute) before its own
        # formula: everything from its start to the last re-run module's end is the
        # recompute, checkpoint's own work (RNG state, frames) included
        w0 = info[node][2]
        last = max(info[k][3] for k in tops)
        # ... up to the node's first own op after it (the gap holds checkpoint's unpacking)
        w1 = min((info[k][2] for k in subtree if info[k][2] >= last), default=last)
        out.window_ns[node] = w1 - w0
        rerun = {k for k in subtree if w0 <= info[k][2] and info[k][3] <= w1}
        out.inside |= rerun
        # the outermost ones: their parent is not itself re-run
        parent_of = {c: p for p in [node, *subtree] for c in children.get(p, ())}
        out.outermost[node] = [(k[0], k[1], info[k][3] - info[k][2]) for k in rerun
                               if parent_of.get(k) not in rerun]
    return out
