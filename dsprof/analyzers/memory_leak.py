"""Memory that grows step after step: a leak, and the line that causes it.

Example:
    ``val_loss_sum += val_loss`` with a loss that requires grad keeps every step's autograd
    graph, and the activations it saved, alive: live bytes at the step boundaries climb by the
    same amount each step.

Pattern:
    Live bytes at consecutive step boundaries (``allocator`` rows: the allocator's count on an
    accelerator, every step; the CPU timeline's at each profiled boundary) rise at least 3
    times in a row, in at least 80 % of the intervals, by more than noise (64 KiB and 0.1 % of
    the level per step; each rise counted above half that). Steps 0 and 1 are left out: the
    first steps legitimately allocate optimizer state and caches.

    On a CPU, whose timeline holds only the profiled boundaries (3-4 points), the process
    RSS read at every step end over the rest of the run (the steps that count: not those
    dsprof disturbed) must grow by at least a quarter of that (``RSS_SHARE``): a script that kept a 1 MiB input alive across one of 4 boundaries
    was told "a leak, 518 MiB over the run" while its RSS grew 0.2 KiB a step.

Algorithm:
    The growth per step is the least-squares slope over those boundaries. The evidence names
    (1) a variable whose autograd graph grows at every boundary (``grad_holders``), with the
    statement that builds it up, and (2) the allocation sites of the tensors each step made
    that were still alive when the capture ended (excluding gradients, parameters and
    optimizer state, which legitimately survive). The saving is the growth over the run's
    steps after the first leaking one.
"""

from __future__ import annotations

import ast
import itertools
import re

import numpy as np

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.render.safe_text import one_line
from dsprof.units import fmt_bytes

MIN_POINTS = 4
MIN_GROWTH = 64 << 10
MIN_SHARE = 0.001
MIN_RSS_STEPS = 20
RSS_SHARE = 0.25
"""A CPU leak must show in the process RSS over the run: at least this share of its growth."""


class MemoryLeakAnalyzer(Analyzer):
    name = "memory_leak"
    requires = ("allocator",)

    def run(self, ctx: Context) -> list[Finding]:
        findings = []
        series = ctx.run.sql("""
            SELECT rank, device, list(step ORDER BY step), list(allocated ORDER BY step)
            FROM allocator WHERE source IN ('memory_stats', 'timeline') AND step > 1
              AND allocated IS NOT NULL
            GROUP BY rank, device ORDER BY rank, device""")
        self.no_finding_reason: str | None = None
        for rank, device, steps, values in series:
            growth = _growth(steps, values)
            if growth is None:
                continue
            rss = _rss_growth(ctx, rank, steps[0]) if device == "cpu" else None
            if rss is not None and rss < RSS_SHARE * growth:
                # a CPU timeline holds only the profiled boundaries; the RSS at every step end
                # says whether the run kept the memory
                self.no_finding_reason = (
                    f"live bytes on {device} rose {_human(growth)} a step over the profiled "
                    f"boundaries {steps[0]}..{steps[-1]}, but the process RSS grew "
                    f"{_human(max(rss, 0.0))} a step over the run's steps after them: "
                    "not kept, not a leak")
                continue
            findings.append(self._finding(ctx, rank, device, steps, values, growth))
        return findings

    def _finding(self, ctx: Context, rank: int, device: str, steps: list[int],
                 values: list[int], growth: float) -> Finding:
        holder = _growing_holder(ctx, rank)
        sites = _surviving_sites(ctx, rank, device)
        total_steps = ctx.run.sql("SELECT count(*) FROM steps WHERE rank = ?", [rank])[0][0] \
            if ctx.run.has("steps") else len(steps)
        leak_steps = max(int(total_steps) - steps[0], len(steps))
        words = ctx.words
        ev = [Evidence(f"live bytes at step boundaries {steps[0]}..{steps[-1]}: "
                       f"{_mib(values[0])} -> {_mib(values[-1])} MiB "
                       f"(+{growth / 2**20:.3f} MiB {words.per_step})", rank=rank, step=steps[-1],
                       value=growth)]
        title = f"Memory grows {_human(growth)} {words.per_step} on {device}: a leak"
        fix = ("Find what keeps the tensors of each step alive (lists of outputs, running sums "
               "of tensors, caches) and keep plain numbers or detached tensors instead.")
        if holder is not None:
            name, site, statement, nodes = holder
            ev.insert(0, Evidence(f"`{name}` holds an autograd graph that grows every step "
                                  f"({nodes[0]} -> {nodes[-1]} nodes), built up at {site}",
                                  rank=rank, site=site))
            title = (f"`{name}` at {site} keeps {words.every_steps} graph alive: "
                     f"{_human(growth)}{words.slash_step}")
            fix = _fix(name, site, statement)
        for site, nbytes, count in sites[:3]:
            ev.append(Evidence(f"{_human(nbytes)} in {count} blocks allocated at {site} "
                               "outlive their step", rank=rank, site=site, value=nbytes))
        return Finding(
            analyzer=self.name, kind="memory.leak", key=f"{device}:{holder[0] if holder else ''}",
            title=title, saving_bytes=int(growth * leak_steps), confidence="high" if holder
            else "medium",
            explanation=(f"Over {len(steps)} step boundaries live memory on {device} rose by "
                         f"{_human(growth)} {words.per_step} (least-squares slope); over the run's "
                         f"{leak_steps} steps after step {steps[0]} that is "
                         f"{_human(growth * leak_steps)} that is never given back, and a longer "
                         "run runs out of memory."),
            evidence=tuple(ev), fix=fix,
            verify=f"dsprof run {ctx.target_command}" if ctx.target_command else "",
            data={"steps": steps, "live_bytes": values, "growth_per_step": growth})


def _growth(steps: list[int], values: list[int]) -> float | None:
    if len(values) < MIN_POINTS:
        return None
    v = np.asarray(values, dtype=np.float64)
    diffs = np.diff(v)
    floor = max(MIN_GROWTH, MIN_SHARE * float(np.median(v)))
    # each rise counted must be more than noise: +4 KiB, +1 MiB, +4 KiB (one tensor alive
    # across one boundary) made a 404 KiB slope out of 4 KiB a step
    if np.mean(diffs > floor / 2) < 0.8:
        return None
    slope = float(np.polyfit(np.asarray(steps, dtype=np.float64), v, 1)[0])
    if slope < floor:
        return None
    return slope


def _rss_growth(ctx: Context, rank: int, first: int) -> float | None:
    """The process RSS's mean growth per step over the run's counted steps from ``first``
    (each step's RSS at its end less the step before's), or None when fewer than
    ``MIN_RSS_STEPS`` steps have it. Only the steps that count (``run.facts``): the step that
    writes the profiler's trace raised the RSS 5.4 MiB once (dsprof's own export), and a slope
    over every step read that as 104.6 KiB a step of the script's (a torch.func per-sample
    gradient loop whose RSS grew 3 KiB a step otherwise was told "a leak")."""
    if not ctx.run.has("steps"):
        return None
    counted = {int(s) for r, s, _ in ctx.run.facts.step.counted if int(r) == rank}
    rows = ctx.run.sql("SELECT step, rss_bytes FROM steps WHERE rank = ? AND step >= ? "
                       "AND rss_bytes IS NOT NULL ORDER BY step", [rank, first - 1])
    deltas = [b - a for (s0, a), (s1, b) in itertools.pairwise(rows)
              if s1 == s0 + 1 and s1 in counted and s1 >= first]
    if len(deltas) < MIN_RSS_STEPS:
        return None
    return float(np.mean(deltas))


def _growing_holder(ctx: Context, rank: int) -> tuple[str, str, str | None, list[int]] | None:
    if not ctx.nonempty("grad_holders"):
        return None
    rows = ctx.run.sql("""
        SELECT name, any_value(site), any_value(statement), list(graph_nodes ORDER BY step)
        FROM grad_holders WHERE rank = ? GROUP BY name, function
        HAVING count(*) >= 3 ORDER BY max(graph_nodes) DESC""", [rank])
    for name, site, statement, nodes in rows:
        if all(b > a for a, b in itertools.pairwise(nodes)):
            return name, site, statement, nodes
    return None


def _fix(name: str, site: str, statement: str | None) -> str:
    """The statement rewritten to add the value (``.item()``), not the tensor.

    The statement and the name come from the run directory: they are rewritten into code only
    while each is one line of plain arithmetic on names (:func:`_plain_statement`), so that a
    run directory's text can never add a line, or a call of its choosing, to the code pasted;
    else the fix names no statement."""
    head = (f"# {one_line(site)}: add up the value, not the tensor (a tensor keeps its whole "
            "graph)\n")
    if not _plain_statement(statement or ""):
        statement = None
    if not _plain_statement(f"{name} += 0"):
        name = "total_loss"
    m = re.fullmatch(r"\s*(.+?)\s*\+=\s*(.+?)\s*", statement or "", re.DOTALL)
    if m:
        return head + f"{m.group(1)} += {_item(m.group(2))}"
    m = re.fullmatch(r"\s*(.+?)\s*=\s*(.+?)\s*\+\s*(.+?)\s*", statement or "", re.DOTALL)
    if m and m.group(1) == m.group(2):
        return head + f"{m.group(1)} = {m.group(1)} + {_item(m.group(3))}"
    return head + f"{name} += loss.item()   # or loss.detach(), or compute it under " \
        "torch.no_grad()"


# what a statement that adds up a loss is made of (``total += loss * x.size(0)``); a string,
# a lambda, a name with an underscore in front (``__import__``) or one of these builtins is
# not, and keeps the statement out of the code pasted
_PLAIN_NODES = (ast.Module, ast.Assign, ast.AugAssign, ast.Name, ast.Attribute, ast.Subscript,
                ast.Constant, ast.BinOp, ast.UnaryOp, ast.Call, ast.keyword, ast.Tuple,
                ast.Slice, ast.expr_context, ast.operator, ast.unaryop)
_UNSAFE_NAMES = frozenset({"eval", "exec", "compile", "open", "getattr", "setattr", "delattr",
                           "globals", "locals", "vars", "input", "breakpoint", "os", "sys",
                           "subprocess", "shutil"})


def _plain_statement(code: str) -> bool:
    """``code`` is one statement on one line, of names, numbers, arithmetic and calls only."""
    code = code.strip()
    if one_line(code) != code:
        return False
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    if len(tree.body) != 1:
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _PLAIN_NODES):
            return False
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
            return False
        word = node.id if isinstance(node, ast.Name) else \
            node.attr if isinstance(node, ast.Attribute) else None
        if word is not None and (word.startswith("_") or word in _UNSAFE_NAMES):
            return False
    return True


def _item(expr: str) -> str:
    return f"{expr}.item()" if re.fullmatch(r"[\w.\[\]]+", expr) else f"({expr}).item()"


def _surviving_sites(ctx: Context, rank: int, device: str) -> list[tuple[str, int, int]]:
    """Sites of allocations made in a step before the capture's last, never freed in it."""
    if not ctx.run.has("memory"):
        return []
    joins, key = "", "NULL"
    if ctx.run.has("stacks"):
        joins += "LEFT JOIN stacks s ON s.rank = m.rank AND s.stack_id = m.stack_id "
        key = "s.site"
    if ctx.run.has("ops"):
        joins += "LEFT JOIN ops o ON o.rank = m.rank AND o.id = m.op_id "
        key = f"coalesce({key}, o.name || coalesce(' in ' || m.module, ''))"
    rows = ctx.run.sql(f"""
        WITH last AS (SELECT capture, max(step) AS step FROM memory
                      WHERE rank = $1 AND device = $2 GROUP BY capture)
        SELECT coalesce({key}, 'unknown') AS k, sum(m.bytes), count(*)
        FROM memory m JOIN last ON last.capture = m.capture {joins}
        WHERE m.rank = $1 AND m.device = $2 AND m.action = 'alloc' AND m.free_ns IS NULL
          AND m.source <> 'baseline' AND m.step < last.step
          AND coalesce(m.category, '') NOT IN ('gradient', 'parameter', 'optimizer_state')
        GROUP BY k ORDER BY 2 DESC""", [rank, device])
    return [(k, int(b), int(c)) for k, b, c in rows]


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f}"


def _human(n: float) -> str:
    return fmt_bytes(n, decimals=1)
