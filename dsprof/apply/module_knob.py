"""What the knobs that act on named modules share (``DS_COMPILE``, ``DS_GRADIENT_CHECKPOINTING``,
``DS_LIBRARY_OP``).

Module paths are the names dsprof gives modules (``TransformerLM.blocks.0.attn``: the root's
class name, then its ``named_modules()`` path) and may use ``*`` for one path component
(``TransformerLM.blocks.*.attn``). Models are usually built after the session starts, so such a
knob waits: a global forward pre-hook sees each root module the first time it is called (a
module not seen yet is a root: its parent's walk would have marked it), walks its submodules
once and hands them, named, to :meth:`ModuleKnob.apply_to`; a module below one already changed
is skipped (compiling or checkpointing both would do the inner one twice).

A global module hook puts every module call of the program on ``Module._call_impl``'s slow
path (77-92 us a step on the corpus's tiny GPT-2), and Dynamo guards on the global hook dicts:
a hook removed after a compiled forward was traced recompiles it. So the hook goes as soon as
the value is found: at the end of the root walk after which every pattern has matched some
module (``1`` for checkpointing: once a root's repeated stack was found). A walk sees the
root's whole tree at its first call, before its forward runs, so a pattern such as
``Model.blocks.*`` has all its modules by then. What this misses (docs/decisions.md): a root
first called after that (a second instance of a class already matched built anew, a model
built later, another root a ``*`` in the root component could match; a ``copy.deepcopy`` of a
changed model is changed with it, :mod:`dsprof.apply.changed_forward`); a pattern that names
the second of two roots keeps the hook until that root is called.
"""

from __future__ import annotations

import re
from typing import Any

from dsprof.apply import Knob
from dsprof.log import logger
from dsprof.module_paths import named_module_paths


def path_regexes(patterns: list[str]) -> list[re.Pattern[str]]:
    """``*`` matches one path component."""
    return [re.compile("[^.]*".join(re.escape(part) for part in p.split("*"))) for p in patterns]


def split_paths(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def named_modules(root: Any) -> list[tuple[str, Any]]:
    """(dsprof module path, module) of ``root`` and everything below it."""
    return list(named_module_paths(root))


def outermost(named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The modules of ``named`` (in walk order) that are not below another one of them."""
    kept: list[tuple[str, Any]] = []
    for name, sub in named:
        if not any(name.startswith(k + ".") for k, _ in kept):
            kept.append((name, sub))
    return kept


class ModuleKnob(Knob):
    """A knob that changes the modules :meth:`select` picks, once per root module.

    Subclasses set ``self.patterns`` in ``parse`` (then call :meth:`_ready`), and implement
    :meth:`apply_to`, which returns True when it changed the module.
    """

    patterns: list[str]

    def _ready(self) -> None:
        self._regexes = path_regexes(self.patterns)
        self.changed: list[str] = []
        self.found: list[str] = []  # every module path the walks picked, changed or not
        self._unmatched = list(self._regexes)  # patterns no walk has matched yet
        self._seen: dict[int, Any] = {}
        self._handle: Any = None

    def install(self) -> None:
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._handle = register_module_forward_pre_hook(self._pre)

    def uninstall(self) -> None:
        self._remove_hook()
        if not self.changed:
            logger.warning("%s: no module matched %s", self.env, self.value)

    def select(self, named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """The modules to change: by default those the patterns name."""
        return [(n, m) for n, m in named if any(r.fullmatch(n) for r in self._regexes)]

    def apply_to(self, name: str, module: Any) -> bool:
        raise NotImplementedError

    @property
    def hooked(self) -> bool:
        """Whether the global module hook is still installed."""
        return self._handle is not None

    def found_all(self) -> bool:
        """Whether the walks so far found what the value asks for: a module for every pattern
        (with no pattern, ``1``: some module at all). Then the hook has nothing left to do."""
        return bool(self.found) and not self._unmatched

    def _remove_hook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._seen.clear()  # only the hook reads it; it held every walked module alive

    def _pre(self, module: Any, args: Any) -> None:
        import torch

        if torch.compiler.is_compiling() or id(module) in self._seen:
            return
        named = named_modules(module)
        for _, sub in named:
            self._seen[id(sub)] = sub  # keeps ids valid: a freed id could be reused
        picked = self.select(named)
        self.found += [name for name, _ in picked]
        self._unmatched = [r for r in self._unmatched
                           if not any(r.fullmatch(name) for name, _ in picked)]
        for name, sub in outermost(picked):
            if self.apply_to(name, sub):
                self.changed.append(name)
        if self.found_all():
            # before the root's forward runs: no module call pays for the hook from here on,
            # and a forward compiled below this root is traced without it (no recompile)
            self._remove_hook()
            logger.debug("%s: every pattern matched in %s; the module hook is removed",
                         self.env, named[0][0])
