"""How dsprof names a module: the root's class name, then its ``named_modules()`` path
(``TransformerLM.blocks.3.attn``). The collectors (modules, memory census, activations), the
apply knobs and the tables all use this one rule, so a path in a finding is the path a knob
accepts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def module_path(root_name: str, sub_name: str) -> str:
    """The path of ``sub_name`` (a ``named_modules()`` name, "" for the root) under a root
    called ``root_name``."""
    return f"{root_name}.{sub_name}" if sub_name else root_name


def named_module_paths(root: Any) -> Iterator[tuple[str, Any]]:
    """(path, module) of ``root`` (named by its class) and every module below it, in
    ``named_modules()`` order."""
    name = type(root).__name__
    for sub_name, sub in root.named_modules():
        yield module_path(name, sub_name), sub
