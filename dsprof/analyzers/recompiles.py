"""Code that torch.compile compiles again and again, from Dynamo's record of each compilation
(the ``compiles`` table; dsprof runs).

Dynamo guards each graph on what it assumed while tracing: a tensor's sizes, a Python value it
read, a list's length, an object's identity. A call that fails every guard of the code's graphs
compiles it again (``recompile_reason`` names the guard), and after ``recompile_limit`` (8)
compilations of one code it gives up and runs that code uncompiled for the rest of the process,
with one warning among the script's output.

Some recompiles are paid once and are fine: a tensor's size changing once (Dynamo then makes
that size dynamic: one recompile), training and evaluation (grad mode, ``module.training``:
one graph each). The finding fires for one code when either

- Dynamo gave up on it (``fail_reason`` "recompile limit"): the code ran uncompiled from then
  on; or
- it recompiled ``MIN_RECOMPILES`` times or more for other reasons than those mode switches,
  and still in the second half of the run (``LATE``): recompiles that stopped early (a list
  whose 6 lengths were all cached by step 5 of 30) are a one-time cost, said in ``skipped``.

Pattern measured here: a compiled loss that reads a global step counter
(``* (1.0 + STEP % 13)``) recompiled at each of its first 8 calls (``G['STEP'] == 3``,
46-188 ms each with ``backend="eager"`` on this 2-core machine, 0.4 ms steps) and then ran
uncompiled.

The saving is the recompilations' measured time spread over the run's steps (the steps that
compiled are left out of the step statistics, run.facts, so this time is in no other finding).
What the uncompiled code then costs a step is not priced: the compiled code's speed is not
measured where it no longer runs. The fix follows the guard that failed most.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.render.safe_text import one_line

MIN_RECOMPILES = 3
LATE = 0.5  # recompiles still in this share of the run's steps on: it has not settled
# guards of a mode a script switches between on purpose: one graph each, paid once
_MODE = re.compile(r"grad_mode|___check_global_state|\.training\b|\btraining ==|"
                   r"GLOBAL_STATE|autocast|is_inference", re.IGNORECASE)
_SIZE = re.compile(r"(size|stride) mismatch at index (\d+)", re.IGNORECASE)
_LENGTH = re.compile(r"^len\((.{1,80}?)\) == \d+")
_GLOBAL = re.compile(r"^G\['([^']{1,80})'\]")
# an argument or local compared with a constant: Dynamo 2.13 writes ``s == 0.0``, ``mode ==
# 'm2'``, older ones ``L['s'] == 0.0``
_LOCAL = re.compile(r"^(?:L\[')?([A-Za-z_]\w{0,80})(?:'\])? == (?:-?\d|'|\"|True|False|None)")
_IDENTITY = re.compile(r"___check_obj_id|\bid\(|ID_MATCH", re.IGNORECASE)
_TYPE = re.compile(r"___check_type_id|TYPE_MATCH|dtype mismatch|requires_grad mismatch",
                   re.IGNORECASE)
_LIMIT = re.compile(r"recompile.?limit|cache_size_limit|cache size limit", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*\d+/\d+(?:_\d+)?:\s*")


@dataclass(frozen=True)
class Guard:
    """A failed guard, as Dynamo wrote it, and what sort of value it checked."""

    text: str  # the guard, without Dynamo's "0/3:" prefix and its source comment
    kind: str  # size, length, global, value, identity, type, mode, other
    name: str = ""  # the global, argument or list the guard read, where it says


def guard_of(reason: str) -> Guard:
    """The first failed guard of a ``recompile_reason`` (Dynamo lists one per line, each
    ``frame/attempt: guard  # source``)."""
    first = reason.strip().split("\n", 1)[0]
    text = _PREFIX.sub("", first).split("  #", 1)[0].split(" # ", 1)[0].strip()
    if _MODE.search(text):
        return Guard(text, "mode")
    if m := _SIZE.search(text):
        return Guard(text, "size", m.group(2))
    if m := _LENGTH.match(text):
        return Guard(text, "length", m.group(1))
    if _IDENTITY.search(text):
        return Guard(text, "identity")
    if _TYPE.search(text):
        return Guard(text, "type")
    if m := _GLOBAL.match(text):
        return Guard(text, "global", m.group(1))
    if m := _LOCAL.match(text):
        return Guard(text, "value", m.group(1))
    return Guard(text, "other")


_WHAT = {
    "size": "a tensor's size changed",
    "length": "a list's length changed",
    "global": "a Python global it reads changed",
    "value": "a Python value passed to it changed",
    "identity": "a new object reached it (built anew each call)",
    "type": "a type, dtype or requires_grad changed",
    "other": "a guard failed",
}


def _fix(guard: Guard, code: str, site: str) -> str:
    where = f"# {one_line(code)} at {one_line(site)}, recompiled because: {one_line(guard.text)}\n"
    name = guard.name if guard.name.isidentifier() else ""
    if guard.kind == "global":
        shown = name or "the global"
        return where + (
            f"# Each value of {shown} is a new graph: pass it in as a tensor, whose value\n"
            "# the graph reads at run time, or keep the read out of the compiled code.\n"
            + (f"{name}_t = torch.tensor(float({name}))  # each step, outside the compiled "
               f"code\nout = {one_line(code) if code.isidentifier() else 'fn'}(..., {name}_t)"
               f"  # and use {name}_t in place of {name} inside"
               if name else "value_t = torch.tensor(float(value))  # pass this in instead"))
    if guard.kind == "value":
        shown = name or "the argument"
        return where + (
            f"# {shown} is a Python number or string that changes between calls: each value\n"
            "# is a new graph. Pass numbers as tensors (torch.tensor(x)); a string or flag\n"
            "# that takes a few values should take them only (one graph each).")
    if guard.kind == "length":
        shown = one_line(guard.name)
        return where + (
            f"# {shown} changes length: each length is a new graph. Stack it into one tensor\n"
            f"# (torch.stack({shown}) with a padded, fixed count) before the call.")
    if guard.kind == "size":
        return where + (
            "# Dynamo makes a size dynamic after it changes once; a size that keeps\n"
            "# recompiling was marked static or dynamic shapes are off. Mark it dynamic:\n"
            f"torch._dynamo.mark_dynamic(x, {guard.name})  # before the first call\n"
            "# or pad inputs to a few fixed sizes (buckets), or torch.compile(..., dynamic=True)")
    if guard.kind == "identity":
        return where + (
            "# A new module, function or closure reaches the compiled code at each call:\n"
            "# build it once, before the loop, and reuse it.")
    if guard.kind == "type":
        return where + (
            "# The inputs' type, dtype or requires_grad alternate: cast them to one before\n"
            "# the call.")
    return where + "# Run with TORCH_LOGS=recompiles to see each guard that failed."


class Recompiles(Analyzer):
    name = "recompiles"

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.nonempty("compiles"):
            return "needs the compiles table (a dsprof run whose script uses torch.compile)"
        return None

    def __init__(self) -> None:
        self.calls: list = []  # meta.json compile.calls: the script's torch.compile calls

    def run(self, ctx: Context) -> list[Finding]:
        rows = ctx.run.sql("""
            SELECT rank, frame, attempt, code, site, step, dur_ns, backward, recompile_reason,
                   fail_reason
            FROM compiles WHERE frame IS NOT NULL AND attempt IS NOT NULL
            ORDER BY rank, frame, attempt, start_ns""")
        by_code: dict[tuple[int, int], list[tuple]] = {}
        for row in rows:
            by_code.setdefault((int(row[0]), int(row[1])), []).append(row)
        steps = {int(r): (int(n), int(t or 0)) for r, n, t in ctx.run.sql(
            "SELECT rank, count(*), sum(dur_ns) FROM steps WHERE dur_ns > 0 GROUP BY rank")} \
            if ctx.nonempty("steps") else {}
        self.step_s = ctx.step_s or 0.0
        compiled = ctx.meta.get("compile")
        compiled = compiled if isinstance(compiled, dict) else {}
        calls = compiled.get("calls")
        self.calls = calls if isinstance(calls, list) else []
        limit = compiled.get("recompile_limit")
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
        out, quiet = [], []
        for (rank, frame), group in by_code.items():
            n_steps, run_ns = steps.get(rank, (0, 0))
            finding = self._judge(rank, frame, group, n_steps, run_ns, limit)
            if isinstance(finding, Finding):
                out.append(finding)
            elif finding:
                quiet.append(finding)
        if not out and quiet:
            self.no_finding_reason = quiet[0]
        return out

    def _named(self, group: list[tuple]) -> tuple[str, str]:
        """The compiled code's name and line; for a compiled module, whose code Dynamo names
        as torch's own wrapper (``torch/_dynamo/external_utils.py``'s ``inner``), the
        script's torch.compile call that made it, where it made one."""
        named = [r for r in group if r[3] or r[4]]
        code = str(named[0][3] or "compiled code") if named else "compiled code"
        site = str(named[0][4] or "?") if named else "?"
        if not site.startswith("torch/"):
            return code, site
        calls = [c for c in self.calls if isinstance(c, list) and len(c) == 2]
        if len(calls) == 1:
            return f"the compiled {calls[0][1]}", str(calls[0][0])
        if calls:
            return "a compiled module", "torch.compile at " + ", ".join(
                str(c[0]) for c in calls[:3])
        return "a compiled module", site

    def _judge(self, rank: int, frame: int, group: list[tuple], n_steps: int, run_ns: int,
               limit: int | None) -> Finding | str | None:
        code, site = self._named(group)
        gave_up = [r for r in group if r[9] and _LIMIT.search(str(r[9]))]
        recompiles = [r for r in group if int(r[2]) >= 1 and r[8] and not r[7]
                      and not (r[9] and _LIMIT.search(str(r[9])))]
        guards = [(r, guard_of(str(r[8]))) for r in recompiles]
        counted = [(r, g) for r, g in guards if g.kind != "mode"]
        if not gave_up and len(counted) < MIN_RECOMPILES:
            if counted:
                return (f"{one_line(code)} at {one_line(site)} recompiled {len(counted)} "
                        f"time(s) (under {MIN_RECOMPILES}, and Dynamo did not give up on it): "
                        "paid once, not a finding")
            return None
        last = max((int(r[5]) for r, _ in counted if r[5] is not None), default=None)
        if not gave_up and (last is None or last < n_steps * LATE):
            # the values it saw were all cached by then: a one-time cost a longer run spreads
            return (f"{one_line(code)} at {one_line(site)} recompiled {len(counted)} times, "
                    f"the last in step {last if last is not None else '?'} of {n_steps}, and "
                    "not after: a one-time cost that a longer run spreads over its steps, not "
                    "a finding")
        # the recompilations' own time, their backward graphs' included (same attempt)
        attempts = {int(r[2]) for r, _ in counted}
        spent = sum(int(r[6] or 0) for r in group if int(r[2]) in attempts)
        # the recompiles' share of the run's time, as that share of a full-speed step: the
        # steps that compiled are not in the step time (facts.COMPILED_SQL), so their time
        # over the steps read "saves 12.2 ms/step (100%)" beside a 1.6 ms step
        share = spent / max(run_ns, spent, 1)
        per_step = share * self.step_s * 1e9 if self.step_s else spent / max(n_steps, 1)
        kinds = Counter(g.kind for _, g in counted)
        main = next((g for _, g in counted if g.kind == kinds.most_common(1)[0][0]), None) \
            if counted else None
        if main is None:  # gave up after mode switches only: say the last guard
            main = guard_of(str(gave_up[0][8] or "")) if gave_up[0][8] else Guard("", "other")
        what = _WHAT.get(main.kind, "a guard failed") if main.kind != "mode" else \
            "its mode changed"
        stop = f", then gave up: it runs uncompiled since step {gave_up[0][5]}" \
            if gave_up and gave_up[0][5] is not None else ", then gave up: it runs uncompiled" \
            if gave_up else ""
        title = (f"Stop recompiling {one_line(code)} ({one_line(site)}): it compiled again "
                 f"{len(counted)} time{'s' if len(counted) != 1 else ''}, each time "
                 f"{what}{stop}")
        explanation = (
            f"Dynamo's record of rank {rank}'s compilations: {one_line(code)} at "
            f"{one_line(site)} compiled {1 + len(recompiles)} time(s); {len(counted)} "
            f"recompilation(s) took {spent / 1e6:.1f} ms in all, {share:.0%} of the time of "
            f"the run's {n_steps} steps ({run_ns / 1e9:.3g} s); the saving is that share of a "
            "full-speed step (the steps that compiled are left out of the step statistics, so "
            "this time is in none of the others; a longer run pays the same recompilations "
            "over more steps). "
            f"Each time {what}"
            f" ({kinds.most_common(1)[0][1] if counted else 0} of them), first: "
            f"{one_line(main.text)}.")
        if gave_up:
            explanation += (
                f" After {limit or 'its limit of'} compilations Dynamo gave up "
                f"(recompile_limit{'' if limit is None else f' = {limit}'}): the code has run "
                "uncompiled since, which the run's later steps pay and this saving does not "
                "price (the compiled code's speed is not measured where it no longer runs).")
        mode = len(guards) - len(counted)
        if mode:
            explanation += (f" {mode} recompilation(s) for a mode switch (training/evaluation, "
                            "grad mode) are left out: one graph each, paid once.")
        evidence = tuple(
            Evidence(f"step {r[5] if r[5] is not None else '?'}: {one_line(g.text)} "
                     f"({int(r[6] or 0) / 1e6:.1f} ms)", rank=rank,
                     step=None if r[5] is None else int(r[5]), site=site,
                     value=int(r[6] or 0) / 1e6)
            for r, g in counted[:8])
        if gave_up:
            evidence += (Evidence(
                f"step {gave_up[0][5] if gave_up[0][5] is not None else '?'}: "
                f"{one_line(gave_up[0][9])}", rank=rank,
                step=None if gave_up[0][5] is None else int(gave_up[0][5]), site=site),)
        return Finding(
            analyzer=self.name, kind="compile.recompiles", key=f"{site}|{code}",
            # measured time, but a longer run spreads it thinner unless Dynamo gave up
            title=title, saving_s=per_step / 1e9, confidence="high" if gave_up else "medium",
            explanation=explanation, evidence=evidence, fix=_fix(main, code, site),
            data={"recompiles": len(counted), "mode_recompiles": mode,
                  "recompile_ms": spent / 1e6, "gave_up": bool(gave_up),
                  "guard_kind": main.kind, "frame": frame})
