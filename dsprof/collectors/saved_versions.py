"""Autograd's in-place check, kept while dsprof's saved-tensor hooks are on.

Autograd remembers the version of every tensor it saves for backward and, when backward
unpacks it, raises if an in-place op changed it since ("one of the variables needed for
gradient computation has been modified by an inplace operation ..."). It skips that check for
a tensor that went through ``saved_tensors_hooks`` (torch's ``SavedVariable::unpack``: "we
can't track versions through the hooks"). The activation tracker's hooks are on while a
window records, so there a script with that bug (``y = x.sigmoid(); y.mul_(2)``) trained on
with wrong gradients instead of stopping. The pack hook here keeps the version with the
detached tensor, and the unpack hook raises what autograd raises, with its message: the op
named is the one that made the tensor (torch names the in-place op for a saved input that is
not a leaf; the error and where it is raised are the same).
"""

from __future__ import annotations

import re
from typing import Any

from dsprof.frames import OWN_CODES, raised_in_signal_handler

_BACKWARD = re.compile(r"Backward\d*$")


class Packed:
    """A saved tensor (detached: returning it whole would make a reference cycle through
    ``grad_fn`` that never frees a saved output) with what the check needs."""

    __slots__ = ("made_by", "output_nr", "tensor", "version")

    def __init__(self, tensor: Any, version: int, made_by: str | None, output_nr: int):
        self.tensor, self.version, self.made_by, self.output_nr = (
            tensor, version, made_by, output_nr)


def pack(t: Any) -> Any:
    """The pack hook's result for ``t``: its detached self with its version, or the detached
    tensor alone where a version cannot be read (a tensor subclass without one)."""
    detached = t.detach()
    try:
        version = int(t._version)
        node = t.grad_fn
        made_by = None if node is None else node.name()  # trimmed only for a message
        return Packed(detached, version, made_by, int(t.output_nr))
    except Exception as caught:  # no check rather than a failed forward
        if raised_in_signal_handler(caught):
            raise  # the script's own signal handler's: it is the script's
        return detached


def unpack(packed: Any) -> Any:
    if type(packed) is not Packed:
        return packed
    t = packed.tensor
    if t._version != packed.version:
        raise RuntimeError(_modified(packed, int(t._version)))
    return t


def _modified(packed: Packed, now: int) -> str:
    import torch

    t = packed.tensor
    text = (f"one of the variables needed for gradient computation has been modified by an "
            f"inplace operation: [{t.type()} {list(t.size())}]")
    if packed.made_by is not None:
        text += f", which is output {packed.output_nr} of {_BACKWARD.sub('', packed.made_by)},"
    text += f" is at version {now}; expected version {packed.version} instead."
    if torch.is_anomaly_enabled():
        return text + (" Hint: the backtrace further above shows the operation that failed to "
                       "compute its gradient. The variable in question was changed in there "
                       "or anywhere later. Good luck!")
    return text + (" Hint: enable anomaly detection to find the operation that failed to "
                   "compute its gradient, with torch.autograd.set_detect_anomaly(True, "
                   "check_nan=False).")


# the error is autograd's: a traceback the script prints shows no frame of this hook
OWN_CODES.add(unpack.__code__)
