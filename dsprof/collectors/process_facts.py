"""What the profiled process has in use, read at exit from sys.modules (observing, never
importing): its default process group's backend, the training frameworks it imported."""

from __future__ import annotations

import sys


def default_backend() -> str | None:
    """The default process group's backend, if the script has one open now."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return str(dist.get_backend())
    except Exception:  # noqa: BLE001 - a torch without distributed, or a group being torn down
        return None
    return None


def default_group_rank() -> int | None:
    """This process's rank in the default process group, if the script has one open now."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # noqa: BLE001 - a torch without distributed, or a group being torn down
        return None
    return None


# Training frameworks whose own switches the advice should name (gradient_checkpointing=True,
# Trainer(precision=...)). Read from sys.modules at exit: observing, never importing.
_FRAMEWORKS = ("transformers", "lightning", "pytorch_lightning", "accelerate", "deepspeed")


def frameworks_loaded() -> list[str]:
    """The training frameworks the script imported."""
    return [name for name in _FRAMEWORKS if name in sys.modules]
