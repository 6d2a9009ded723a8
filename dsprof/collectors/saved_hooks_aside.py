"""dsprof's saved-tensor hooks step aside for the code that refuses to run under any.

``torch.func.grad`` / ``vjp`` / ``jacrev`` / ``hessian`` (and ``vmap`` over them: per-sample
gradients, meta-learning) enter ``torch.autograd.graph.disable_saved_tensors_hooks``, which
raises ``RuntimeError: torch.func.{grad, vjp, jacrev, hessian} don't yet support saved tensor
hooks`` while any pair of saved-tensor hooks is pushed on the thread. The activation tracker
(:mod:`dsprof.collectors.activations`) pushes one while a profiler window records, so a script
that runs fine without dsprof crashed in its first window (a ``vmap(grad(loss))`` per-sample
gradient loop, torch 2.13).

While the tracker's hooks are installed, ``torch.autograd.graph.disable_saved_tensors_hooks``
(looked up at every call by torch.func's transforms) is a wrapper that pops the tracker's pair
when it is the top of this thread's stack, runs torch's context manager, and pushes the pair
back after. What a transform saves is not charged to any module (it is freed inside the
transform anyway). A pair the script pushed itself is left where it is, so the transform
raises as it would without dsprof. The wrapper goes with the tracker's hooks, which go before
the first ``torch.compile`` (collectors/compile_watch.py): Dynamo compares that attribute with
torch's own function, and never sees the wrapper.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Generator
from typing import Any

_original: Any = None  # torch's disable_saved_tensors_hooks, while the wrapper stands in
_pair: tuple[Any, Any] | None = None  # the tracker's (pack, unpack), while installed
_aside = 0  # transforms running now with the pair popped off the stack


def install(pack: Callable[[Any], Any], unpack: Callable[[Any], Any]) -> None:
    """Put the wrapper in place for the hook pair ``(pack, unpack)`` the caller pushed."""
    global _original, _pair
    import torch

    graph = torch.autograd.graph
    if _original is None:
        _original = graph.disable_saved_tensors_hooks
    original = _original
    _pair = (pack, unpack)

    @contextlib.contextmanager
    def disable_saved_tensors_hooks(error_message: str) -> Generator[None, None, None]:
        global _aside
        autograd = torch._C._autograd
        mine = _pair
        top = autograd._top_saved_tensors_default_hooks(False)
        aside = mine is not None and top is not None and top[0] == mine[0]
        if aside:
            autograd._pop_saved_tensors_default_hooks()
            _aside += 1
        try:
            with original(error_message):
                yield
        finally:
            if aside:
                _aside -= 1
                # back on the stack unless the tracker let it go meanwhile (a window that
                # closed inside the transform: a step can end there)
                if _pair is not None and _pair[0] == mine[0]:  # type: ignore[index]
                    autograd._push_saved_tensors_default_hooks(*mine)  # type: ignore[misc]

    functools.update_wrapper(disable_saved_tensors_hooks, original)
    disable_saved_tensors_hooks._dsprof_aside = True  # type: ignore[attr-defined]
    graph.disable_saved_tensors_hooks = disable_saved_tensors_hooks


def uninstall() -> bool:
    """torch's own function back, where the wrapper still stands (a script that put its own
    there keeps it). Returns whether the pair is on the stack for the caller to pop: not
    while a transform holds it aside (the transform's end then leaves it off)."""
    global _original, _pair
    import torch

    graph = torch.autograd.graph
    if _original is not None and getattr(graph.disable_saved_tensors_hooks, "_dsprof_aside",
                                         False):
        graph.disable_saved_tensors_hooks = _original
    _original = None
    _pair = None
    return _aside == 0


def can_push() -> bool:
    """False inside a torch.func transform (saved-tensor hooks disabled there: pushing a pair
    raises); a window that opens at a step ending inside one records no activations."""
    import torch

    return bool(torch._C._autograd._saved_tensors_hooks_is_enabled())


def scripts_pair_on() -> bool:
    """A pair of the script's own is on this thread's stack (a ``save_on_cpu()`` or an
    activation-compression pair around its whole loop): dsprof's pushed above it would stand in
    for it, and the script's saved tensors would not be what it made them."""
    import torch

    return torch._C._autograd._top_saved_tensors_default_hooks(False) is not None


def pop_own(pack: Callable[[Any], Any]) -> None:
    """Take dsprof's pair (the one whose pack hook is ``pack``) off this thread's stack, and
    only it. The stack pops from the top: where the script pushed a pair after dsprof's and has
    not popped it yet (its ``with`` spans steps), the pairs above are lifted off and put back,
    so the script's ``with`` later pops its own pair, not dsprof's (popping the top took the
    script's pair away, and its pack hook ran for one step of 20)."""
    import torch

    autograd = torch._C._autograd
    above: list[tuple[Any, Any]] = []
    try:
        while (top := autograd._top_saved_tensors_default_hooks(False)) is not None:
            autograd._pop_saved_tensors_default_hooks()
            if top[0] == pack:
                break
            above.append(top)
    finally:
        for pair in reversed(above):
            autograd._push_saved_tensors_default_hooks(*pair)
