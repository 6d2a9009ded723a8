"""``DS_GRADIENT_CHECKPOINTING=1 | <module path>[,<module path>...]``: activation checkpointing
without a code change.

Each named module's ``forward`` is replaced by one that runs the original through
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` while autograd records (under
``torch.no_grad()`` or in eval it runs as is). Module paths are the names dsprof gives modules
(``TransformerLM.blocks.3``: the root's class name, then its ``named_modules()`` path) and may
use ``*`` for one path component (``TransformerLM.blocks.*``); the checkpointing analyzer's
finding lists them. ``1`` means the usual choice by hand: every child of the model's largest
stack of repeated blocks (the ``nn.ModuleList``/``nn.Sequential`` whose children share one
class and hold the most parameters), i.e. "checkpoint each Transformer block".

Models are built after the session starts, so, as ``DS_COMPILE`` does, the knob waits for each
root module's first call (a global forward pre-hook), walks its submodules once and wraps the
matching ones; a module below one already wrapped is left alone (checkpointing both would
recompute the inner one twice and free nothing more). Replacing ``forward`` rather than the
call keeps module hooks outside the checkpoint, so dsprof's own module annotations still name
the module. The global hook leaves once every path has matched (with ``1``: at the first root
that has a repeated stack; a second model, a GAN's discriminator, must be named), see
:mod:`dsprof.apply.module_knob`.
"""

from __future__ import annotations

import functools
from typing import Any

from dsprof.apply.changed_forward import change_forward
from dsprof.apply.module_knob import (
    ModuleKnob,
    named_modules,
    outermost,
    path_regexes,
    split_paths,
)
from dsprof.errors import ConfigError
from dsprof.log import logger


class GradientCheckpointingKnob(ModuleKnob):
    env = "DS_GRADIENT_CHECKPOINTING"
    doc = "1 (each block of the largest repeated stack) or comma-separated module paths"

    def parse(self) -> None:
        self.auto = self.value.lower() in ("1", "true", "yes", "on")
        self.patterns = [] if self.auto else split_paths(self.value)
        if not self.auto and not self.patterns:
            raise ConfigError(f"{self.env}={self.value!r}: give 1 or module paths such as "
                              "Model.blocks.*, separated by commas")
        self._ready()

    def select(self, named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return repeated_blocks(named) if self.auto else super().select(named)

    def apply_to(self, name: str, module: Any) -> bool:
        change_forward(module, _checkpointing)
        logger.info("%s: checkpointing %s", self.env, name)
        return True

    def report(self) -> dict[str, Any]:
        return {**super().report(), "checkpointed": self.changed}


def checkpointed(forward: Any) -> Any:
    """``forward`` run under non-reentrant activation checkpointing when autograd records."""
    import torch
    from torch.utils.checkpoint import checkpoint

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    run.__dsprof_checkpointed__ = True  # type: ignore[attr-defined]
    return run


def _checkpointing(module: Any, own: Any) -> Any:
    return checkpointed(own)


def repeated_blocks(named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The children of the container (ModuleList or Sequential) whose two or more children
    share one class and together hold the most parameters; empty when there is none."""
    from torch import nn

    best: list[tuple[str, Any]] = []
    best_params = 0
    for name, sub in named:
        if not isinstance(sub, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(sub.named_children())
        if len(children) < 2 or len({type(c) for _, c in children}) != 1:
            continue
        params = sum(p.numel() for p in sub.parameters())
        if params > best_params:
            best_params = params
            best = [(f"{name}.{child}", c) for child, c in children]
    return best


def checkpoint_modules(model: Any, patterns: list[str]) -> list[str]:
    """Checkpoint the submodules of ``model`` that ``patterns`` name (dsprof module paths,
    starting with the model's class name, ``*`` for one component), in user code; returns the
    paths wrapped. What ``DS_GRADIENT_CHECKPOINTING`` does, for a script that wants it kept."""
    regexes = path_regexes(patterns)
    done: list[str] = []
    for name, sub in outermost([(n, m) for n, m in named_modules(model)
                                if any(r.fullmatch(n) for r in regexes)]):
        if getattr(sub.forward, "__dsprof_checkpointed__", False):
            continue
        change_forward(sub, _checkpointing)
        done.append(name)
    return done
