"""``DS_COMPILE=<module path>[,<module path>...]``: torch.compile those modules' forward.

Module paths are the names dsprof's timeline gives modules (``TransformerLM.blocks.0.attn``:
the root module's class name, then its ``named_modules()`` path), and may use ``*`` for one
path component (``TransformerLM.blocks.*.attn``). Models are usually built after the session starts, so the
knob waits: a global forward pre-hook sees each root module the first time it is called, walks
its submodules once and replaces the matching ones' ``forward`` with ``torch.compile(forward)``
(the submodules of a compiled module are compiled with it, not again). Compiling ``forward``
rather than the whole call (``nn.Module.compile()``) keeps module hooks outside the compiled
code: dsprof's module annotations still name the module in the trace, and adding or removing
those hooks at profiler windows does not force a recompile. Compiling happens
on their first call (the first step, or the first after a recompile): a run with this knob
spends its first steps compiling, which ``dsprof verify`` leaves out of the step time.
"""

from __future__ import annotations

import re
from typing import Any

from dsprof.apply import Knob
from dsprof.errors import ConfigError
from dsprof.log import logger


class CompileKnob(Knob):
    env = "DS_COMPILE"
    doc = "comma-separated module paths (wildcards allowed) to torch.compile"

    def parse(self) -> None:
        self.patterns = [p.strip() for p in self.value.split(",") if p.strip()]
        if not self.patterns:
            raise ConfigError(f"{self.env}={self.value!r}: give module paths such as "
                              "Model.blocks.0.mlp, separated by commas")
        self._regexes = [re.compile("[^.]*".join(re.escape(part) for part in p.split("*")))
                         for p in self.patterns]
        self.compiled: list[str] = []
        self._seen: dict[int, Any] = {}
        self._handle: Any = None

    def install(self) -> None:
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._handle = register_module_forward_pre_hook(self._pre)

    def uninstall(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.patterns and not self.compiled:
            logger.warning("%s: no module matched %s", self.env, ",".join(self.patterns))

    def _pre(self, module: Any, args: Any) -> None:
        import torch

        if torch.compiler.is_compiling() or id(module) in self._seen:
            return
        # A module not seen yet is a root (its parent's walk would have marked it).
        root = type(module).__name__
        done: list[str] = []
        for sub_name, sub in module.named_modules():
            self._seen[id(sub)] = sub  # keeps ids valid: a freed id could be reused
            name = f"{root}.{sub_name}" if sub_name else root
            if any(name.startswith(d + ".") for d in done):
                continue
            if any(r.fullmatch(name) for r in self._regexes):
                try:
                    sub.forward = torch.compile(sub.forward)
                except Exception as exc:  # noqa: BLE001 - never fail the user's script
                    logger.error("%s: cannot compile %s: %s", self.env, name, exc)
                    continue
                done.append(name)
                self.compiled.append(name)
                logger.info("%s: compiling %s (its first calls pay the compile time)",
                            self.env, name)

    def report(self) -> dict[str, Any]:
        return {"compiled": self.compiled}
