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
the module.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from dsprof.apply import Knob
from dsprof.errors import ConfigError
from dsprof.log import logger


class GradientCheckpointingKnob(Knob):
    env = "DS_GRADIENT_CHECKPOINTING"
    doc = "1 (each block of the largest repeated stack) or comma-separated module paths"

    def parse(self) -> None:
        self.auto = self.value.lower() in ("1", "true", "yes", "on")
        self.patterns = [] if self.auto else [p.strip() for p in self.value.split(",")
                                              if p.strip()]
        if not self.auto and not self.patterns:
            raise ConfigError(f"{self.env}={self.value!r}: give 1 or module paths such as "
                              "Model.blocks.*, separated by commas")
        self._regexes = [re.compile("[^.]*".join(re.escape(part) for part in p.split("*")))
                         for p in self.patterns]
        self.wrapped: list[str] = []
        self._seen: dict[int, Any] = {}
        self._handle: Any = None

    def install(self) -> None:
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._handle = register_module_forward_pre_hook(self._pre)

    def uninstall(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if not self.wrapped:
            logger.warning("%s: no module matched %s", self.env, self.value)

    def _pre(self, module: Any, args: Any) -> None:
        if id(module) in self._seen:
            return
        root = type(module).__name__
        named = []
        for sub_name, sub in module.named_modules():
            self._seen[id(sub)] = sub  # keeps ids valid: a freed id could be reused
            named.append((f"{root}.{sub_name}" if sub_name else root, sub))
        chosen = repeated_blocks(named) if self.auto else [
            (name, sub) for name, sub in named if any(r.fullmatch(name) for r in self._regexes)]
        done: list[str] = []
        for name, sub in chosen:
            if any(name.startswith(d + ".") for d in done):
                continue
            sub.forward = checkpointed(sub.forward)
            done.append(name)
            self.wrapped.append(name)
        if done:
            logger.info("%s: checkpointing %s", self.env, ", ".join(done))

    def report(self) -> dict[str, Any]:
        return {"checkpointed": self.wrapped}


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
    regexes = [re.compile("[^.]*".join(re.escape(part) for part in p.split("*")))
               for p in patterns]
    root = type(model).__name__
    done: list[str] = []
    for sub_name, sub in model.named_modules():
        name = f"{root}.{sub_name}" if sub_name else root
        if any(name.startswith(d + ".") for d in done) or \
                getattr(sub.forward, "__dsprof_checkpointed__", False):
            continue
        if any(r.fullmatch(name) for r in regexes):
            sub.forward = checkpointed(sub.forward)
            done.append(name)
    return done
