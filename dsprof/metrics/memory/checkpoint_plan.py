"""Which modules to checkpoint: the Pareto front of peak memory against recompute time.

Pure computation over plain numbers (no tables, no torch), so it is tested on its own and
timed on synthetic trees of hundreds of modules.

Model. Wrapping module *m* in ``torch.utils.checkpoint.checkpoint`` drops, during the
forward, the tensors its forward saved for backward that were created inside it (``freed``:
the ``modules`` table's ``activation_bytes``, which already leaves out the module's inputs,
the one thing checkpoint keeps) and pays one more forward of *m* in the backward (``cost``:
its forward time). During the backward the checkpointed modules are recomputed one at a time,
each just before its own backward, so at most one of them holds its activations again. For a
set S of modules that share no ancestor (checkpointing a block and its child would recompute
the child twice and free nothing more):

    peak(S) = max(floor, peak - sum(freed[m] for m in S) + max(freed[m] for m in S))

where ``floor`` is the part of the peak that is not activations (parameters, gradients,
optimizer state, the model's input).

Algorithm. For a threshold T on ``max(freed)`` (every distinct value of ``freed``, at most
``_MAX_THRESHOLDS`` of them), a tree DP builds, bottom up, the Pareto front of (bytes freed,
seconds added) over the antichains of each subtree: a node's front is "the node itself" or the
Minkowski sum of its children's fronts, pruned of dominated points. Freed bytes are bucketed
on a grid of ``_BUCKETS`` steps of the largest saving, which bounds every front's size, so the
whole solve is O(thresholds x modules x buckets^2) in the worst case and milliseconds in
practice. The fronts of all thresholds are merged into one front of (peak, seconds added).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

_BUCKETS = 512
_MAX_THRESHOLDS = 12


@dataclass(frozen=True)
class Candidate:
    """A module that could be checkpointed.

    Args:
        name: qualified module path (``TransformerLM.blocks.3``); the tree comes from the dots.
        freed: bytes its forward saves for backward that checkpointing would drop.
        cost_s: seconds one more forward of it costs per step.
    """

    name: str
    freed: int
    cost_s: float


@dataclass(frozen=True)
class PlanPoint:
    """One point of the front: checkpoint ``modules``, the peak becomes ``peak``, each step
    takes ``cost_s`` longer."""

    modules: tuple[str, ...]
    peak: int
    freed: int
    recompute_peak: int
    cost_s: float


class _Front:
    """Pareto points of a subtree: bytes freed, seconds, largest single freed, member sets
    (see :func:`_members`)."""

    __slots__ = ("cost", "freed", "maxa", "sets")

    def __init__(self, freed: np.ndarray, cost: np.ndarray, maxa: np.ndarray, sets: list[Any]):
        self.freed, self.cost, self.maxa, self.sets = freed, cost, maxa, sets


_EMPTY = _Front(np.zeros(1, np.int64), np.zeros(1), np.zeros(1, np.int64), [None])


def _members(s: Any) -> list[int]:
    """The module indices of a set, stored as a binary tree of pairs (a merge keeps its two
    parts, in O(1), instead of copying them); None is the empty set."""
    out: list[int] = []
    stack = [s]
    while stack:
        x = stack.pop()
        if isinstance(x, tuple):
            stack.extend(x)
        elif x is not None:
            out.append(x)
    return out


def _prune(freed: np.ndarray, cost: np.ndarray, grid: float) -> np.ndarray:
    """Indices of the points that are not dominated (more freed for no more cost), at most
    one per grid bucket of freed bytes."""
    bucket = np.floor(freed / grid).astype(np.int64)
    # Within a bucket the cheapest point wins; then across buckets cost must fall as freed
    # rises, scanned from the most freed down.
    order = np.lexsort((-freed, cost, -bucket))
    bucket_sorted = bucket[order]
    first = np.ones(len(order), bool)
    first[1:] = bucket_sorted[1:] != bucket_sorted[:-1]
    order = order[first]
    best = np.minimum.accumulate(cost[order])
    keep = np.ones(len(order), bool)
    keep[1:] = cost[order][1:] < best[:-1]
    return order[keep]


def _sum(a: _Front, b: _Front, grid: float) -> _Front:
    if len(b.sets) == 1 and b.sets[0] is None:
        return a  # b is "nothing": a leaf that cannot be checkpointed under this threshold
    if len(a.sets) == 1 and a.sets[0] is None:
        return b
    freed = (a.freed[:, None] + b.freed[None, :]).ravel()
    cost = (a.cost[:, None] + b.cost[None, :]).ravel()
    maxa = np.maximum(a.maxa[:, None], b.maxa[None, :]).ravel()
    keep = _prune(freed, cost, grid)
    nb = len(b.sets)
    sets = [(a.sets[i // nb], b.sets[i % nb]) for i in keep.tolist()]
    return _Front(freed[keep], cost[keep], maxa[keep], sets)


def _with_node(below: _Front, i: int, freed: int, cost: float, grid: float) -> _Front:
    """``below`` plus the choice "checkpoint node i itself"."""
    if len(below.sets) == 1:  # nothing below: the front is {nothing, the node}
        return _Front(np.array([0, freed], np.int64), np.array([0.0, cost]),
                      np.array([0, freed], np.int64), [None, i])
    f = np.append(below.freed, freed)
    c = np.append(below.cost, cost)
    m = np.append(below.maxa, freed)
    s = [*below.sets, i]
    keep = _prune(f, c, grid)
    return _Front(f[keep], c[keep], m[keep], [s[k] for k in keep.tolist()])


def _children(names: list[str]) -> dict[int, list[int]]:
    """Parent index -> child indices, a child's parent being its nearest listed ancestor
    (-1 for roots)."""
    index = {n: i for i, n in enumerate(names)}
    tree: dict[int, list[int]] = {}
    for i, name in enumerate(names):
        parent = -1
        head = name
        while "." in head:
            head = head.rsplit(".", 1)[0]
            if head in index:
                parent = index[head]
                break
        tree.setdefault(parent, []).append(i)
    return tree


def pareto_front(candidates: list[Candidate], peak: int, floor: int = 0,
                 evaluate: Callable[[list[list[int]]], list[int]] | None = None,
                 max_evaluated: int = 160) -> list[PlanPoint]:
    """Every plan worth having, from "checkpoint nothing" to the lowest peak, sorted by cost
    (ascending; peak falls along the list).

    Args:
        candidates: modules with what checkpointing each would free and cost.
        peak: the measured peak bytes.
        floor: bytes of the peak that are not activations (checkpointing cannot go below).
        evaluate: a finer peak model: given sets of candidate indices, their peaks. The DP
            picks the sets (its front of freed bytes against cost, at most ``max_evaluated``
            points spread over it), ``evaluate`` prices them and the front is pruned again.
    """
    cands = [c for c in candidates if c.freed > 0]
    names = [c.name for c in cands]
    freed = np.array([c.freed for c in cands], np.int64)
    cost = np.array([max(c.cost_s, 0.0) for c in cands])
    tree = _children(names)
    # Post-order (children before parents) without recursion: deep trees stay safe.
    order: list[int] = []
    stack = list(tree.get(-1, []))
    while stack:
        i = stack.pop()
        order.append(i)
        stack.extend(tree.get(i, []))
    order.reverse()
    # The most any antichain can free bounds the grid: a node, or all its children together.
    bound: dict[int, int] = {}
    for i in order:
        bound[i] = max(int(freed[i]), sum(bound[c] for c in tree.get(i, [])))
    grid = max(sum(bound[r] for r in tree.get(-1, [])) / _BUCKETS, 1.0)

    points: list[tuple[float, int, int, Any]] = [(0.0, 0, 0, None)]
    for threshold in _thresholds(freed):
        fronts: dict[int, _Front] = {}
        for i in order:
            below = _EMPTY
            for child in tree.get(i, []):
                below = _sum(below, fronts.pop(child), grid)
            if freed[i] <= threshold:
                below = _with_node(below, i, int(freed[i]), float(cost[i]), grid)
            fronts[i] = below
        top = _EMPTY
        for root in tree.get(-1, []):
            top = _sum(top, fronts.pop(root), grid)
        for f, c, m, s in zip(top.freed.tolist(), top.cost.tolist(), top.maxa.tolist(),
                              top.sets, strict=True):
            points.append((c, f, m, s))
    return _final_front(points, peak, floor, names, evaluate, max_evaluated)


def _thresholds(freed: np.ndarray) -> list[int]:
    """Distinct values of ``freed``, largest first, dropping a value within 5 % of the last
    kept one (repeated blocks differ by a few bytes; a threshold per copy would only repeat
    work), at most ``_MAX_THRESHOLDS``."""
    kept: list[int] = []
    for v in sorted({int(x) for x in freed.tolist()}, reverse=True):
        if not kept or v < 0.95 * kept[-1]:
            kept.append(v)
    if len(kept) > _MAX_THRESHOLDS:
        picks = np.unique(np.linspace(0, len(kept) - 1, _MAX_THRESHOLDS).round().astype(int))
        kept = [kept[i] for i in picks]
    return kept


def _final_front(points: list[tuple[float, int, int, Any]], peak: int, floor: int,
                 names: list[str], evaluate: Callable[[list[list[int]]], list[int]] | None,
                 max_evaluated: int) -> list[PlanPoint]:
    if evaluate is None:
        plans = _pruned([(cost, max(floor, peak - freed + maxa), freed, maxa, _members(s))
                         for cost, freed, maxa, s in points])
    else:
        # The finer model prices the sets the DP found worth having (more freed for more
        # cost), not only those the additive model puts on its front.
        plans = []
        most = -1
        for cost, freed, maxa, s in sorted(points, key=lambda p: (p[0], -p[1])):
            if freed > most:
                most = freed
                plans.append((cost, 0, freed, maxa, _members(s)))
        if len(plans) > max_evaluated:
            picks = np.unique(np.linspace(0, len(plans) - 1, max_evaluated).round().astype(int))
            plans = [plans[i] for i in picks]
        peaks = evaluate([p[4] for p in plans])
        plans = _pruned([(c, max(floor, int(pk)), f, m, s) for (c, _, f, m, s), pk in
                         zip(plans, peaks, strict=True)])
    return [PlanPoint(tuple(sorted(names[i] for i in s)), int(pk), int(f), int(m), float(c))
            for c, pk, f, m, s in plans]


def _pruned(plans: list[tuple[float, int, int, int, list[int]]]
            ) -> list[tuple[float, int, int, int, list[int]]]:
    """Plans sorted by cost whose peak is below every cheaper plan's."""
    plans.sort(key=lambda p: (p[0], p[1]))
    out = []
    best = None
    for p in plans:
        if best is None or p[1] < best:
            best = p[1]
            out.append(p)
    return out


def cheapest_under(front: list[PlanPoint], target: int) -> PlanPoint | None:
    """The plan with the least recompute whose peak is at most ``target`` (None if none)."""
    return next((p for p in front if p.peak <= target), None)
