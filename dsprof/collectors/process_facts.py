"""What the profiled process has in use, read at exit from sys.modules (observing, never
importing): its default process group's backend, the training frameworks it imported."""

from __future__ import annotations

import sys
from typing import Any


def _ask_default_group(question: str) -> Any:
    """``torch.distributed.<question>()`` of the default process group, if the script has one
    open now (None without one, or while it is being torn down)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return getattr(dist, question)()
    except Exception:  # noqa: BLE001 - a torch without distributed, or a group being torn down
        return None
    return None


def default_backend() -> str | None:
    """The default process group's backend, if the script has one open now."""
    backend = _ask_default_group("get_backend")
    return None if backend is None else str(backend)


def default_group_rank() -> int | None:
    """This process's rank in the default process group, if the script has one open now."""
    rank = _ask_default_group("get_rank")
    return None if rank is None else int(rank)


# Training frameworks whose own switches the advice should name (gradient_checkpointing=True,
# Trainer(precision=...)). Read from sys.modules at exit: observing, never importing.
# ``transformers.trainer`` says the HF Trainer was imported: importing lightning imports
# transformers too, so "transformers" alone does not say whose TrainingArguments to set.
# ``mmengine.runner``: MMEngine's Runner (it builds the optimizer and its AmpOptimWrapper from
# the script's optim_wrapper dict; importing it imports transformers too, not its Trainer).
_FRAMEWORKS = ("transformers", "transformers.trainer", "lightning", "pytorch_lightning",
               "accelerate", "deepspeed", "ignite", "keras",
               "skorch", "pyro.optim", "mmengine.runner")


# transformers 5 renamed gradient checkpointing: TrainingArguments(activation_checkpointing=True)
# and model.activation_checkpointing_enable(); the old names warn (FutureWarning, an error
# under -W error) and go in v6, and releases before the rename know only the old names. This
# marker says the script's transformers has the new ones, so the advice names what it accepts.
ACTIVATION_CHECKPOINTING = "transformers.activation_checkpointing"


# The script built an ``accelerate.Accelerator`` (its mixed_precision=... is the switch).
# "accelerate" alone says nothing: transformers imports it to load any model.
ACCELERATOR = "accelerate.Accelerator"


# The script's model ran wrapped by Lightning Fabric's setup() (a _FabricModule, named as the
# model it wraps: dsprof/module_paths.py): its loop is the script's, Fabric(...) its switches.
FABRIC_SETUP = "lightning.fabric.setup"


# TRL's trainers take their TrainingArguments as a config of their own (SFTConfig, DPOConfig,
# GRPOConfig, ...): "trl.config:SFTConfig" for each such class loaded (TRL imports a trainer's
# config with the trainer, lazily), so the switch names the class the script builds.
TRL_CONFIG = "trl.config:"


# transformers' own TrainingArguments subclasses (Seq2SeqTrainingArguments, in
# transformers.training_args_seq2seq): "transformers.args:Seq2SeqTrainingArguments" when its
# module is loaded. transformers loads it lazily, only when the script names the class
# (transformers 5.25: importing Trainer, TrainingArguments or even Seq2SeqTrainer leaves it
# out), so a loaded one is the class the script builds; a Seq2SeqTrainer script was told
# "args = TrainingArguments(..., logging_nan_inf_filter=False)".
HF_ARGUMENTS = "transformers.args:"


def frameworks_loaded() -> list[str]:
    """The training frameworks the script imported (and, for transformers, the marker
    :data:`ACTIVATION_CHECKPOINTING` when the imported release names checkpointing so;
    :data:`ACCELERATOR` when an Accelerator was built; :data:`FABRIC_SETUP` when a module
    walk met a model set up by Fabric; :data:`TRL_CONFIG` and :data:`HF_ARGUMENTS` per
    TrainingArguments subclass loaded)."""
    from dsprof import module_paths

    found = [name for name in _FRAMEWORKS if name in sys.modules]
    if _has_activation_checkpointing():
        found.append(ACTIVATION_CHECKPOINTING)
    if _made_accelerator():
        found.append(ACCELERATOR)
    if "fabric" in module_paths.SEEN:
        found.append(FABRIC_SETUP)
    found += [TRL_CONFIG + name for name in _trl_configs()]
    found += [HF_ARGUMENTS + name for name in _hf_argument_classes()]
    return found


def _training_arguments() -> type | None:
    """transformers' TrainingArguments, if the script loaded it."""
    args = getattr(sys.modules.get("transformers.training_args"), "TrainingArguments", None)
    return args if isinstance(args, type) else None


def _subclasses_in(modules: list[str], base: type) -> set[str]:
    """The public subclasses of ``base`` defined in the loaded ``modules`` (by name)."""
    names = set()
    for name in modules:
        module = sys.modules.get(name)
        if module is None:
            continue
        names.update(attr for attr, obj in list(vars(module).items())
                     if isinstance(obj, type) and not attr.startswith("_")
                     and obj.__module__ == name and issubclass(obj, base))
    return names


def _hf_argument_classes() -> list[str]:
    """The TrainingArguments subclasses of transformers' own loaded ``training_args_*``
    modules (Seq2SeqTrainingArguments)."""
    try:
        args = _training_arguments()
        if args is None:
            return []
        modules = [name for name in list(sys.modules)
                   if name.startswith("transformers.training_args_")]
        return sorted(_subclasses_in(modules, args) - {"TrainingArguments"})[:4]
    except Exception:  # noqa: BLE001 - a half-torn-down module at exit: say nothing
        return []


def _trl_configs() -> list[str]:
    """The public TrainingArguments subclasses of TRL's loaded config modules."""
    try:
        args = _training_arguments()
        if args is None:
            return []
        modules = [name for name in list(sys.modules)
                   if name.startswith("trl.trainer.") and name.endswith("_config")]
        return sorted(_subclasses_in(modules, args))[:8]
    except Exception:  # noqa: BLE001 - a half-torn-down module at exit: say nothing
        return []


def _made_accelerator() -> bool:
    """Whether the script built an Accelerator: accelerate's own test, read without
    building one (AcceleratorState's shared dict fills in Accelerator.__init__)."""
    try:
        initialized = getattr(sys.modules.get("accelerate.state"), "is_initialized", None)
        return bool(initialized is not None and initialized())
    except Exception:  # noqa: BLE001 - a half-torn-down module at exit: say nothing
        return False


def _has_activation_checkpointing() -> bool:
    """Whether the transformers the script imported has the activation_checkpointing names:
    read from the classes it loaded (transformers imports lazily: only those in sys.modules)."""
    try:
        args = getattr(sys.modules.get("transformers.training_args"), "TrainingArguments", None)
        if args is not None:
            return "activation_checkpointing" in (getattr(args, "__dataclass_fields__", None)
                                                  or {})
        model = getattr(sys.modules.get("transformers.modeling_utils"), "PreTrainedModel", None)
        return model is not None and hasattr(model, "activation_checkpointing_enable")
    except Exception:  # noqa: BLE001 - a half-torn-down module at exit: say nothing
        return False
