"""How dsprof names a module: the root's class name, then its ``named_modules()`` path
(``TransformerLM.blocks.3.attn``). The collectors (modules, memory census, activations), the
apply knobs and the tables all use this one rule, so a path in a finding is the path a knob
accepts.

torch.compile is invisible in the names: ``torch.compile(model)`` returns an ``OptimizedModule``
holding the model as ``_orig_mod``, so a plain walk would name ``OptimizedModule._orig_mod.blocks.0``
where the eager run says ``Model.blocks.0``, and a knob value copied from one run's finding
would match nothing in the other. A wrapper is named as the module it wraps (its class, its
path), and ``_orig_mod`` path components are dropped (a compiled block:
``Model.blocks.0._orig_mod.attn`` is ``Model.blocks.0.attn``).

Lightning Fabric's ``fabric.setup(model)`` is the same kind of wrapper: a ``_FabricModule``
holding the model as ``_forward_module`` (``_FabricModule._forward_module.blocks.0``, and a fix
that said ``model._forward_module.blocks[i]``). It is named as the model it wraps too
(``Net.blocks.0``; the script's ``model.blocks[i]`` reaches it through the wrapper), its
``_forward_module`` component dropped where the module above it is a ``_FabricModule`` (a
model's own attribute of that name keeps it). Meeting one is recorded (:data:`SEEN`): meta.json
says the script set up a Fabric model, the fact the advice reads for Fabric's own switches.

Which root a module is named under when it is not simply called through its root's forward
(:class:`ModuleNames`, the one rule the annotator, the activation collector and the knobs share):

- a module is named by the walk of the first root called that contains it, and keeps that name
  for as long as it lives: a module shared by two roots (``Model.shared`` is ``Other.shared``)
  keeps its first root's path when the second root is walked, so it has one name in a profile
  whichever parent calls it;
- except when the first root it was found under is itself inside the new root: a submodule
  called directly before its model (``model.head(x)`` from the loop, then ``model(x)``) was a
  root of its own (``Linear``) and takes its path in the model (``Model.head``) once the model
  is called;
- a module called under another module but in no walked tree (held in a plain list, passed as
  an argument) is ``<caller's path>.<its class>`` (``Model.Linear``), and its own submodules
  are named below that.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator
from typing import Any

# the attribute torch.compile's wrapper (torch._dynamo.eval_frame.OptimizedModule) keeps the
# compiled module under
COMPILED_MODULE_ATTR = "_orig_mod"
# the attribute Lightning Fabric's _FabricModule keeps the module it runs under
FABRIC_MODULE_ATTR = "_forward_module"
# where Fabric's wrapper class lives: lightning's package, and the standalone lightning_fabric
_FABRIC_WRAPPERS = ("lightning.fabric.wrappers", "lightning_fabric.wrappers")
# wrappers met by a walk in this process ("fabric"), for meta.json's frameworks
SEEN: set[str] = set()


def join_knob_paths(paths: Any) -> str:
    """Module paths as one knob value (``DS_GRADIENT_CHECKPOINTING``, ``DS_COMPILE``...),
    comma-separated. A ModuleDict key may hold a comma (``str(("paper", "cites", "paper"))``, a
    heterogeneous graph's edge type): it is written ``\\,`` (and a backslash ``\\\\``), so
    the value splits back into the same paths (:func:`split_knob_paths`)."""
    return ",".join(p.replace("\\", "\\\\").replace(",", "\\,") for p in paths)


def split_knob_paths(value: str) -> list[str]:
    """The paths of a knob value written by :func:`join_knob_paths` (or by hand), stripped,
    empty ones dropped."""
    paths, part, escaped = [], [], False
    for c in value:
        if escaped:
            part.append(c if c in ",\\" else "\\" + c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            paths.append("".join(part))
            part = []
        else:
            part.append(c)
    paths.append("".join(part) + ("\\" if escaped else ""))
    return [p.strip() for p in paths if p.strip()]


def module_path(root_name: str, sub_name: str) -> str:
    """The path of ``sub_name`` (a ``named_modules()`` name, "" for the root) under a root
    called ``root_name``; ``_orig_mod`` components (torch.compile's wrapper) are dropped."""
    sub = ".".join(p for p in sub_name.split(".") if p and p != COMPILED_MODULE_ATTR)
    return f"{root_name}.{sub}" if sub else root_name


def is_compile_wrapper(module: Any) -> bool:
    """Whether ``module`` is torch.compile's ``OptimizedModule`` (without importing Dynamo: a
    program that never imported it has none)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    wrapper = getattr(eval_frame, "OptimizedModule", None)
    return wrapper is not None and isinstance(module, wrapper)


def is_fabric_wrapper(module: Any) -> bool:
    """Whether ``module`` is Lightning Fabric's ``_FabricModule`` (without importing lightning:
    a program that never imported it has none)."""
    for name in _FABRIC_WRAPPERS:
        wrapper = getattr(sys.modules.get(name), "_FabricModule", None)
        if wrapper is not None and isinstance(module, wrapper):
            return True
    return False


def is_wrapper(module: Any) -> bool:
    """Whether ``module`` is named as the module it wraps (torch.compile's, Fabric's)."""
    return is_compile_wrapper(module) or is_fabric_wrapper(module)


def unwrapped(module: Any) -> Any:
    """The module a wrapper stands for (``module`` itself when it is none)."""
    while True:
        if is_compile_wrapper(module):
            module = getattr(module, COMPILED_MODULE_ATTR)
        elif is_fabric_wrapper(module):
            module = getattr(module, FABRIC_MODULE_ATTR)
        else:
            return module


def root_name(root: Any) -> str:
    """What a root module is called: its class name (the compiled module's, for a wrapper)."""
    return type(unwrapped(root)).__name__


def named_module_paths(root: Any, name: str | None = None) -> Iterator[tuple[str, Any]]:
    """(path, module) of ``root`` (named ``name``, by default its class) and every module
    below it, in ``named_modules()`` order; a wrapper (torch.compile's, Fabric's) and the
    module it wraps have the same path, the wrapper first."""
    name = name or root_name(root)
    # raw named_modules() name -> that name with the Fabric wrappers' components dropped
    # (named_modules gives a parent before its children)
    kept: dict[str, str] = {}
    fabric: set[str] = set()  # raw names of the Fabric wrappers met
    for sub_name, sub in root.named_modules():
        parent, _, last = sub_name.rpartition(".")
        if not sub_name:
            kept[sub_name] = ""
        elif last == FABRIC_MODULE_ATTR and parent in fabric:
            kept[sub_name] = kept[parent]
        else:
            above = kept.get(parent, parent)
            kept[sub_name] = f"{above}.{last}" if above else last
        if is_fabric_wrapper(sub):
            fabric.add(sub_name)
            SEEN.add("fabric")
        yield module_path(name, kept[sub_name]), sub


class ModuleNames:
    """Qualified names of modules as they are called, by the rule in the module docstring."""

    def __init__(self) -> None:
        # id(module) -> (a reference to it, its path, id of the root whose walk named it)
        self._names: dict[int, tuple[weakref.ref[Any], str, int]] = {}

    def clear(self) -> None:
        self._names.clear()

    def known(self, module: Any) -> str | None:
        """The module's path when it has one (None: it was never named or it died)."""
        entry = self._names.get(id(module))
        return entry[1] if entry is not None and entry[0]() is module else None

    def name(self, module: Any, parent: str | None) -> str:
        """The module's path; ``parent`` is the path of the module calling it (None: a root)."""
        return self.name_call(module, parent)[0]

    def name_call(self, module: Any, parent: str | None) -> tuple[str, list[tuple[str, Any]]]:
        """The module's path, and the (path, module) pairs this call named or renamed (empty
        when the module already had its name)."""
        known = self.known(module)
        if known is not None:
            return known, []
        # unnamed: a new root, or a module called from outside every tree walked so far
        name = None if parent is None else f"{parent}.{root_name(module)}"
        named = self._walk(module, name, id(module))
        return named[0][0], named

    def _root_of(self, module: Any) -> int | None:
        entry = self._names.get(id(module))
        return entry[2] if entry is not None and entry[0]() is module else None

    @staticmethod
    def _ids(root: Any) -> set[int]:
        return {id(m) for m in root.modules()}

    def _walk(self, root: Any, name: str | None, root_id: int) -> list[tuple[str, Any]]:
        inside = self._ids(root)
        named: list[tuple[str, Any]] = []
        for path, sub in named_module_paths(root, name):
            first_root = self._root_of(sub)
            # unnamed, or named under a root this one contains: the larger tree's path
            if first_root is None or first_root in inside:
                self._names[id(sub)] = (weakref.ref(sub), path, root_id)
                named.append((path, sub))
        return named
