"""The ``--device`` check the examples share: the device, or one line and exit 2."""

from __future__ import annotations

import sys

import torch


def pick_device(name: str, script: str) -> torch.device:
    """``torch.device(name)``, or one line and exit 2 when this machine cannot run it."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        why = "not a torch device"
    else:
        if dev.type != "cuda" or torch.cuda.is_available():
            return dev
        why = "no CUDA device here (torch.cuda.is_available() is False); use --device cpu"
    print(f"{script}: --device {name}: {why}", file=sys.stderr)
    sys.exit(2)
