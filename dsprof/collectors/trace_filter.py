"""``DSPROF_TRACE_FILTER``: which ops the DEBUG trace prints.

A filter is a list of terms separated by spaces or commas:

==================  ===================================================================
``op:PATTERN``      the op's name (``aten.addmm.default``) or its short name (``addmm``)
``module:PATTERN``  the module path the op ran in or for (``TransformerLM.blocks.0.attn``)
``step:N``          step N; ``step:A-B`` steps A to B; ``step:A-`` step A onwards
``PATTERN``         a bare word is ``op:PATTERN``
``!op:P``           a leading ``!`` excludes what matches (ops or modules)
==================  ===================================================================

A pattern without ``*``, ``?`` or ``[`` matches anywhere in the name (``blocks.1`` matches
``LM.blocks.1.mlp``); with them it is a shell glob over the whole name. Terms of one kind
widen the selection (``op:mm op:addmm``: either), kinds narrow it (``op:mm module:attn``:
both). Step boundaries are always printed; the NaN/Inf check ignores the filter.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from dsprof.errors import ConfigError

_GLOB = re.compile(r"[*?\[]")
_STEP = re.compile(r"^(\d+)(?:(-)(\d*))?$")


def _matcher(pattern: str):
    if _GLOB.search(pattern):
        return lambda name: fnmatch.fnmatchcase(name, pattern)
    return lambda name: pattern in name


@dataclass(frozen=True)
class TraceFilter:
    """Args:
        ops, modules: patterns an op's name / module must match (any of them; none: all).
        not_ops, not_modules: patterns that exclude.
        steps: inclusive (first, last) ranges, last None for open ended (none: every step).
        text: the filter as given, for messages.
    """

    ops: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    not_ops: tuple[str, ...] = ()
    not_modules: tuple[str, ...] = ()
    steps: tuple[tuple[int, int | None], ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text: str | None) -> TraceFilter:
        """Raises:
            ConfigError: a term is not one of the forms above.
        """
        if not text or not text.strip():
            return cls()
        kinds: dict[str, list[str]] = {"op": [], "module": [], "!op": [], "!module": []}
        steps: list[tuple[int, int | None]] = []
        for term in re.split(r"[\s,]+", text.strip()):
            if not term:
                continue
            kind, sep, value = term.partition(":")
            if not sep:
                kind, value = ("!op", term[1:]) if term.startswith("!") else ("op", term)
            if not value:
                raise ConfigError(f"DSPROF_TRACE_FILTER term {term!r} has nothing after the "
                                  "colon; e.g. op:addmm, module:blocks.0, step:3-5")
            if kind == "step":
                m = _STEP.match(value)
                if m is None:
                    raise ConfigError(f"DSPROF_TRACE_FILTER term {term!r}: a step is N, A-B "
                                      "or A-")
                first = int(m.group(1))
                last = first if not m.group(2) else (int(m.group(3)) if m.group(3) else None)
                if last is not None and last < first:
                    raise ConfigError(f"DSPROF_TRACE_FILTER term {term!r}: {last} < {first}")
                steps.append((first, last))
            elif kind in kinds:
                kinds[kind].append(value)
            else:
                raise ConfigError(f"DSPROF_TRACE_FILTER term {term!r}: use op:, module:, "
                                  "step: (or ! before op:/module: to exclude)")
        return cls(tuple(kinds["op"]), tuple(kinds["module"]), tuple(kinds["!op"]),
                   tuple(kinds["!module"]), tuple(steps), text.strip())

    @property
    def everything(self) -> bool:
        return not (self.ops or self.modules or self.not_ops or self.not_modules or self.steps)

    def step_selected(self, step: int) -> bool:
        if not self.steps:
            return True
        return any(a <= step and (b is None or step <= b) for a, b in self.steps)

    def compile(self) -> OpMatcher:
        return OpMatcher(self)


class OpMatcher:
    """A filter's op and module patterns compiled once, with a cache per (op, module): a
    training loop repeats the same few hundred pairs, so each is judged once."""

    def __init__(self, flt: TraceFilter):
        self._ops = [_matcher(p) for p in flt.ops]
        self._modules = [_matcher(p) for p in flt.modules]
        self._not_ops = [_matcher(p) for p in flt.not_ops]
        self._not_modules = [_matcher(p) for p in flt.not_modules]
        self._cache: dict[tuple[str, str], bool] = {}

    def __call__(self, op: str, module: str) -> bool:
        key = (op, module)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._judge(op, module)
        return hit

    def _judge(self, op: str, module: str) -> bool:
        short = op.split(".")[1] if op.count(".") >= 1 else op
        names = (op, short)
        if any(m(n) for m in self._not_ops for n in names):
            return False
        if any(m(module) for m in self._not_modules):
            return False
        if self._ops and not any(m(n) for m in self._ops for n in names):
            return False
        return not self._modules or any(m(module) for m in self._modules)
