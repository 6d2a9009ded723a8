"""A module's ``forward`` as a knob changed it, made again for each copy of the module.

The module knobs set ``module.forward`` on the instance: a wrapper around the module's own
bound ``forward`` (checkpointed, compiled, swapped for a library op). ``copy.deepcopy`` treats
a function as a constant, so a copy of the model (an EMA model, a DQN target network, an eval
copy) kept the original's wrapper, bound to the *original* module: the copy ran the original's
weights, silently. :class:`ChangedForward` is that wrapper as an object that knows how it was
made: deep-copied with its module, it applies the same change to the copy's own ``forward``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

# (module, the forward before the change) -> the changed forward
Change = Callable[[Any, Callable[..., Any]], Callable[..., Any]]


class ChangedForward:
    """``change(module, own)`` standing in for ``module.forward`` (``own``: the forward it had)."""

    def __init__(self, module: Any, own: Callable[..., Any], change: Change,
                 lazy: bool = False):
        self.module = module
        self.own = own
        self.change = change
        # made at once (a change that fails, fails where the knob applies it), or, for a copy,
        # at its first use: while deepcopy runs, the copied module has no attributes yet
        self._fn: Callable[..., Any] | None = None if lazy else change(module, own)

    @property
    def fn(self) -> Callable[..., Any]:
        if self._fn is None:
            self._fn = self.change(self.module, self.own)
        return self._fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # only for names the object lacks (markers such as __dsprof_checkpointed__); never
        # for its own fields, which a half-built object (during a copy) may not have yet
        if name in ("module", "own", "change", "_fn"):
            raise AttributeError(name)
        return getattr(self.fn, name)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        twin = memo.get(id(self.module))
        if twin is None:  # copied on its own, not with its module: the same forward
            return self
        # the bound forward rebinds to the copy (copy's rule for methods); an inner
        # ChangedForward (two knobs on one module) is made again for it the same way
        own = copy.deepcopy(self.own, memo)
        return ChangedForward(twin, own, self.change, lazy=True)


def change_forward(module: Any, change: Change) -> ChangedForward:
    """Set ``module.forward`` to ``change(module, module.forward)``, copies included."""
    changed = ChangedForward(module, module.forward, change)
    module.forward = changed
    return changed
