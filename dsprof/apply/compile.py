"""``DS_COMPILE=<module path>[,<module path>...]``: torch.compile those modules' forward.

Module paths are the names dsprof's timeline gives modules (``TransformerLM.blocks.0.attn``:
the root module's class name, then its ``named_modules()`` path), and may use ``*`` for one
path component (``TransformerLM.blocks.*.attn``). Models are usually built after the session starts, so the
knob waits: a global forward pre-hook sees each root module the first time it is called, walks
its submodules once and replaces the matching ones' ``forward`` with ``torch.compile(forward)``
(the submodules of a compiled module are compiled with it, not again). Compiling ``forward``
rather than the whole call (``nn.Module.compile()``) keeps module hooks outside the compiled
code: dsprof's module annotations still name the module in the trace, and removing those hooks
at the end of a profiler window does not force a recompile (removing a global hook the trace saw
would). Compiling happens
on their first call (the first step, or the first after a recompile): a run with this knob
spends its first steps compiling, which ``dsprof verify`` leaves out of the step time. The
global hook leaves at the walk after which every path has matched, before that root's forward
runs (:mod:`dsprof.apply.module_knob`): Dynamo guards on the global hooks a trace saw, so a
hook removed after a compiled forward was traced with it would recompile it.
"""

from __future__ import annotations

from typing import Any

from dsprof.apply.changed_forward import change_forward
from dsprof.apply.module_knob import ModuleKnob, split_paths
from dsprof.errors import ConfigError
from dsprof.log import logger


class CompileKnob(ModuleKnob):
    env = "DS_COMPILE"
    doc = "comma-separated module paths (wildcards allowed) to torch.compile"

    def parse(self) -> None:
        self.patterns = split_paths(self.value)
        if not self.patterns:
            raise ConfigError(f"{self.env}={self.value!r}: give module paths such as "
                              "Model.blocks.0.mlp, separated by commas")
        self._ready()

    def apply_to(self, name: str, module: Any) -> bool:
        import torch

        try:
            change_forward(module, lambda m, own: torch.compile(own))
        except Exception as exc:  # noqa: BLE001 - never fail the user's script
            logger.error("%s: cannot compile %s: %s", self.env, name, exc)
            return False
        logger.info("%s: compiling %s (its first calls pay the compile time)", self.env, name)
        return True

    def report(self) -> dict[str, Any]:
        return {**super().report(), "compiled": self.changed}
