"""In-process knobs that apply a finding's fix without editing the user's script.

A knob is read from one environment variable at session start (``DS_COMPILE=...``,
``DS_AUTOCAST=bf16``, ``DS_OPTIMIZER_FUSED=1``) and installs global torch hooks that change
what the script does: compile a module, run forward passes under autocast, switch optimizers
to their fused implementation. ``dsprof run --apply ID`` sets the variables a finding names in
its ``apply`` field; setting them by hand does the same.

Knobs live in one explicit tuple, like the analyzers: add a module with one :class:`Knob`
subclass and a line to ``KNOBS``. A knob never fails the user's script: a value that does not
parse is a :class:`~dsprof.errors.ConfigError` before the script starts (checked again for the
device at session start, the end of the script's ``import torch``), and a hook that fails
at run time logs once and turns itself off.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, ClassVar

# "module:Class" entries, imported only when one of their variables is set.
KNOBS: tuple[str, ...] = (
    "dsprof.apply.compile:CompileKnob",
    "dsprof.apply.library_op:LibraryOpKnob",
    "dsprof.apply.autocast:AutocastKnob",
    "dsprof.apply.optimizer:OptimizerFusedKnob",
    "dsprof.apply.optimizer:OptimizerForeachKnob",
    "dsprof.apply.dataloader:DataLoaderWorkersKnob",
    "dsprof.apply.threads:TorchThreadsKnob",
    "dsprof.apply.checkpointing:GradientCheckpointingKnob",
    "dsprof.apply.batch_size:BatchSizeKnob",
)

# The variable each entry reads, so that nothing is imported for unset knobs. A test checks
# these against the classes.
KNOB_ENV: dict[str, str] = {
    "DS_COMPILE": "dsprof.apply.compile:CompileKnob",
    "DS_LIBRARY_OP": "dsprof.apply.library_op:LibraryOpKnob",
    "DS_AUTOCAST": "dsprof.apply.autocast:AutocastKnob",
    "DS_OPTIMIZER_FUSED": "dsprof.apply.optimizer:OptimizerFusedKnob",
    "DS_OPTIMIZER_FOREACH": "dsprof.apply.optimizer:OptimizerForeachKnob",
    "DS_DATALOADER_WORKERS": "dsprof.apply.dataloader:DataLoaderWorkersKnob",
    "DS_TORCH_THREADS": "dsprof.apply.threads:TorchThreadsKnob",
    "DS_GRADIENT_CHECKPOINTING": "dsprof.apply.checkpointing:GradientCheckpointingKnob",
    "DS_BATCH_SIZE": "dsprof.apply.batch_size:BatchSizeKnob",
}


class Knob:
    """Base class. Subclasses set ``env`` and ``doc`` and implement the three methods.

    Args:
        value: the environment variable's text; :meth:`parse` checks it.
        device_kind: ``cpu``, ``cuda`` or ``rocm`` (from ``collectors.device``).
    """

    env: ClassVar[str] = ""
    doc: ClassVar[str] = ""

    def __init__(self, value: str, device_kind: str):
        self.value = value.strip()
        self.device_kind = device_kind
        self.parse()

    def parse(self) -> None:
        """Check ``self.value``; raise ConfigError naming the variable when it is bad."""

    def install(self) -> None:
        raise NotImplementedError

    def uninstall(self) -> None:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """What the knob did, for meta.json (e.g. the modules it compiled)."""
        return {}


def knob_class(entry: str) -> type[Knob]:
    module, _, cls = entry.partition(":")
    return getattr(importlib.import_module(module), cls)


class AppliedKnobs:
    """The knobs installed for one session."""

    def __init__(self, knobs: list[Knob]):
        self.knobs = knobs

    def uninstall(self) -> None:
        for knob in self.knobs:
            knob.uninstall()

    def report(self) -> dict[str, Any]:
        return {k.env: {"value": k.value, **k.report()} for k in self.knobs}


def from_env(env: Mapping[str, str], device_kind: str) -> list[Knob]:
    """The knobs whose variables are set (and not empty), parsed but not installed.

    Raises:
        ConfigError: a value does not parse.
    """
    return [knob_class(entry)(env[name], device_kind)
            for name, entry in KNOB_ENV.items() if env.get(name, "").strip()]


def install(knobs: list[Knob]) -> AppliedKnobs:
    done: list[Knob] = []
    for knob in knobs:
        knob.install()
        done.append(knob)
    return AppliedKnobs(done)
