"""Attention, recognised by its dataflow: hand-written, or already on SDPA.

Example:
    ``softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v`` on 3-D tensors records
    ``aten::matmul [8,64,32]x[8,32,64]`` -> ``aten::div [8,64,64]`` -> ``aten::softmax [8,64,64]``
    -> ``aten::matmul [8,64,64]x[8,64,32]``: scores built, scaled, normalised and applied.

Pattern:
    per forward sequence (one rank, thread and step), every ``softmax`` whose input P has at
    least two dimensions (``[..., T, S]``) is a candidate. Walking back from it (views and
    mask-building side ops skipped, at most ``WINDOW`` ops), only score ops that take a tensor
    of P's shape (``div``/``mul`` scale, ``masked_fill``/``add``/``where`` mask, casts) may come
    between it and a matmul-like op (``matmul``, ``bmm``, ``einsum``, ``baddbmm``) whose output
    is P. Walking forward (views and ``dropout`` on P skipped), a matmul-like op must take a
    tensor of P's shape. Any rank of tensors and any module layout match, since only shapes
    are compared; Kineto records no tensor identities, so equal shapes stand for "the same
    tensor". ``scaled_dot_product_attention`` (and its flash / efficient / math kernels) is
    attention already on SDPA.

Algorithm:
    one ``fusion.hand_attention`` finding per module (layer indices folded), with the op chain
    and the shapes as evidence, and the SDPA code to paste. Its saving is not claimed here: the
    fusion analyzer prices the scale/mask/softmax chain (``fusion.attention``) when it is large
    enough to matter, and claiming it twice would count one saving twice. A module the fusion
    analyzer priced gets no finding here: its ``fusion.attention`` finding is already titled
    and fixed with SDPA, and says what SDPA also saves in memory. Attention on SDPA
    gets an ``attention.sdpa`` note-like finding (no saving) so a reader sees it was checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dsprof.analyzers.fusion import UNATTRIBUTED, fold_indices
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.ops.fusion_chains import common_module

WINDOW = 8
MATMUL_LIKE = frozenset({"matmul", "bmm", "einsum", "baddbmm", "mm"})
SOFTMAX = frozenset({"softmax", "_softmax", "safe_softmax", "_safe_softmax"})
SCORE_OPS = frozenset({"div", "div_", "mul", "mul_", "add", "add_", "sub", "masked_fill",
                       "masked_fill_", "where", "to", "_to_copy", "type_as", "float", "clamp",
                       "tanh", "scale"})
DROPOUT = frozenset({"dropout", "native_dropout", "feature_dropout", "dropout_"})
VIEWS = frozenset({"view", "reshape", "transpose", "permute", "expand", "contiguous", "t",
                   "unsqueeze", "squeeze", "_unsafe_view", "as_strided", "slice", "select",
                   "view_as", "expand_as", "flatten", "unflatten", "split", "chunk",
                   "unbind", "detach", "alias", "clone"})
SDPA_NAMES = ("scaled_dot_product", "_flash_attention", "_efficient_attention")


@dataclass(frozen=True)
class _Op:
    id: int
    name: str
    shapes: tuple[tuple[int, ...], ...]
    module: str | None


@dataclass(frozen=True)
class AttentionSite:
    rank: int
    step: int | None
    module: str | None
    ops: tuple[str, ...]
    op_ids: tuple[int, ...]
    scores: tuple[int, ...]


def _tensors(shapes_json: str | None) -> tuple[tuple[int, ...], ...]:
    """Every tensor shape among an op's inputs, TensorLists (einsum's operands) flattened."""
    if not shapes_json:
        return ()
    try:
        doc: Any = json.loads(shapes_json)
    except ValueError:
        return ()
    out: list[tuple[int, ...]] = []

    def walk(x: Any) -> None:
        if isinstance(x, list) and x and all(isinstance(d, int) for d in x):
            out.append(tuple(x))
        elif isinstance(x, list):
            for y in x:
                if isinstance(y, list):
                    walk(y)

    for item in doc if isinstance(doc, list) else ():
        walk(item)
    return tuple(out)


def _short(name: str) -> str:
    return name.removeprefix("aten::")


def _makes(op: _Op, scores: tuple[int, ...]) -> bool:
    """A matmul-like op whose output has the scores' shape [..., T, S]."""
    if _short(op.name) not in MATMUL_LIKE or len(op.shapes) < 2:
        return False
    t, s = scores[-2], scores[-1]
    a, b = op.shapes[0], op.shapes[1]
    if len(a) < 2 or len(b) < 2:
        return False
    batch_ok = a[:-2] in (scores[:-2], ()) or len(a) == len(scores)
    if a[-2] != t or not batch_ok:
        return False
    # q @ k^T: b is [..., d, S]; einsum("...td,...sd") keeps k as [..., S, d]
    return (b[-1] == s and b[-2] == a[-1]) or (_short(op.name) == "einsum" and b[-2] == s
                                               and b[-1] == a[-1])


def _uses(op: _Op, scores: tuple[int, ...]) -> bool:
    return any(shape == scores for shape in op.shapes)


def find_attention(seq: list[_Op], rank: int, step: int | None) -> list[AttentionSite]:
    out = []
    for i, op in enumerate(seq):
        if _short(op.name) not in SOFTMAX or not op.shapes or len(op.shapes[0]) < 2:
            continue
        scores = op.shapes[0]
        chain = [op]
        # backwards to the matmul that made the scores
        first = None
        seen = 0
        for j in range(i - 1, -1, -1):
            prev = seq[j]
            name = _short(prev.name)
            if name in VIEWS:
                continue
            seen += 1
            if seen > WINDOW:
                break
            if _makes(prev, scores):
                first = prev
                break
            if name in SCORE_OPS and _uses(prev, scores):
                chain.insert(0, prev)
                continue
            if _uses(prev, scores):
                break  # something else reads the scores: not the attention pattern
            # a side op (building the mask, a constant): skip it
        if first is None:
            continue
        # forwards to the matmul that applies the probabilities
        last = None
        for k in range(i + 1, min(len(seq), i + 1 + WINDOW)):
            nxt = seq[k]
            name = _short(nxt.name)
            if name in VIEWS:
                continue
            if name in DROPOUT and _uses(nxt, scores):
                chain.append(nxt)
                continue
            if name in MATMUL_LIKE and _uses(nxt, scores):
                last = nxt
            break
        if last is None:
            continue
        ops = [first, *chain, last]
        out.append(AttentionSite(rank, step, common_module([o.module for o in ops]),
                                 tuple(_short(o.name) for o in ops), tuple(o.id for o in ops),
                                 scores))
    return out


def attention_sites(ctx: Context) -> tuple[list[AttentionSite], list[tuple[int, str | None]]]:
    """(hand-written attention sites, (rank, module) of every SDPA call) in the forward pass."""
    rows = ctx.run.sql("""
        SELECT o.rank, o.thread, o.step, o.id, o.name, o.input_shapes, o.module
        FROM ops o LEFT JOIN ops p ON p.rank = o.rank AND p.id = o.parent_id
        WHERE o.cat = 'cpu_op' AND (p.cat IS NULL OR p.cat <> 'cpu_op')
          AND coalesce(o.phase, 'forward') = 'forward'
        ORDER BY o.rank, o.thread, o.step, o.start_ns, o.id""")
    seqs: dict[tuple[int, int, int | None], list[_Op]] = {}
    sdpa = []
    for rank, thread, step, op_id, name, shapes, module in rows:
        if any(s in name for s in SDPA_NAMES):
            sdpa.append((int(rank), module))
        seqs.setdefault((int(rank), int(thread or 0), step), []).append(
            _Op(int(op_id), str(name), _tensors(shapes), module))
    sites = [s for (rank, _, step), seq in seqs.items() for s in find_attention(seq, rank, step)]
    return sites, sdpa


class AttentionAnalyzer(Analyzer):
    name = "attention"
    requires = ("ops",)

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.run.sql("SELECT EXISTS (SELECT 1 FROM ops WHERE input_shapes IS NOT NULL)"
                           )[0][0]:
            return "the trace has no input shapes (record it with record_shapes=True)"
        return None

    def run(self, ctx: Context) -> list[Finding]:
        sites, sdpa = attention_sites(ctx)
        out: list[Finding] = []
        by_module: dict[str, list[AttentionSite]] = {}
        for s in sites:
            by_module.setdefault(fold_indices(s.module) if s.module else UNATTRIBUTED,
                                 []).append(s)
        # a module whose scale/mask/softmax chain the fusion analyzer priced already has its
        # finding, titled and fixed with SDPA: a second one here would be one thing said twice
        priced = {f.key.split(":", 1)[0] for f in ctx.found if f.kind == "fusion.attention"}
        for module, items in sorted(by_module.items()):
            if module in priced:
                continue
            first = items[0]
            chain = " -> ".join(first.ops)
            rank_txt = f"{len(first.scores)}-D scores {list(first.scores)}"
            out.append(Finding(
                analyzer=self.name, kind="fusion.hand_attention", key=module,
                title=(f"Use F.scaled_dot_product_attention in {module}: hand-written "
                       f"attention ({chain})"),
                confidence="high",
                explanation=(
                    f"{len(items)} time(s) in the profiled forward passes, {module} builds "
                    f"attention by hand: {chain} on {rank_txt}. One fused SDPA kernel never "
                    "writes the T x S scores to memory (flash / memory-efficient kernels on a "
                    "GPU, a fused kernel on CPU) and saves their activation memory for "
                    "backward. The time it saves on the scale/mask/softmax chain is priced by "
                    "the fusion.attention finding when it is large enough to matter."),
                # (a trace that marks no steps has no step to name)
                evidence=tuple(Evidence(("" if s.step is None else f"step {s.step}: ")
                                        + f"{' -> '.join(s.ops)} (scores {list(s.scores)})",
                                        rank=s.rank, step=s.step,
                                        op_ids=s.op_ids, module=s.module)
                               for s in items[:5]),
                fix=("import torch.nn.functional as F\n"
                     "# q, k, v: [..., T, d]; replaces softmax(q @ k^T * scale [+ mask]) "
                     "[-> dropout] @ v\n"
                     "y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,  # or "
                     "is_causal=True\n"
                     "                                   dropout_p=p if self.training else "
                     "0.0)"),
                verify=("paste the fix, run again and compare: dsprof diff RUN NEW_RUN "
                        "(no knob applies it: DS_COMPILE would measure torch.compile instead)"),
                data={"modules": sorted({s.module for s in items if s.module}),
                      "ops": list(first.ops), "scores": list(first.scores),
                      "instances": len(items)}))
        if sdpa:
            modules = sorted({m for _, m in sdpa if m})
            # blocks.0.attn and blocks.1.attn fold to one name: list each name once
            folded = list(dict.fromkeys(fold_indices(m) for m in modules))
            where = ", ".join(folded[:3]) or "the model"
            out.append(Finding(
                analyzer=self.name, kind="attention.sdpa", key="sdpa",
                title=f"Attention in {where} already uses scaled_dot_product_attention",
                confidence="high",
                explanation=(f"{len(sdpa)} SDPA call(s) in the profiled forward passes: "
                             "nothing to change there."),
                data={"modules": modules, "calls": len(sdpa)}))
        return out
