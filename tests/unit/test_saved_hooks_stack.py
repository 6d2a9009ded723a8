"""dsprof takes only its own saved-tensor hook pair off the thread's stack
(saved_hooks_aside.pop_own), whatever the script pushed since; and sees a pair of the script's
on the stack before it pushes one (scripts_pair_on). Real torch hooks stacks."""

from __future__ import annotations

import torch

from dsprof.collectors import saved_hooks_aside

autograd = torch._C._autograd


def _pair(tag: str):
    def pack(t):
        return t

    def unpack(t):
        return t

    pack.__name__ = unpack.__name__ = tag
    return pack, unpack


def _stack() -> list[str]:
    """The pairs on the stack, bottom first (popped and pushed back)."""
    pairs = []
    while (top := autograd._top_saved_tensors_default_hooks(False)) is not None:
        pairs.append(top)
        autograd._pop_saved_tensors_default_hooks()
    for p in reversed(pairs):
        autograd._push_saved_tensors_default_hooks(*p)
    return [p[0].__name__ for p in reversed(pairs)]


def test_dsprofs_pair_comes_off_from_under_the_scripts():
    ours, script, inner = _pair("dsprof"), _pair("script"), _pair("inner")
    assert not saved_hooks_aside.scripts_pair_on()
    autograd._push_saved_tensors_default_hooks(*ours)
    autograd._push_saved_tensors_default_hooks(*script)
    autograd._push_saved_tensors_default_hooks(*inner)
    try:
        assert saved_hooks_aside.scripts_pair_on()
        saved_hooks_aside.pop_own(ours[0])
        # THEN the script's pairs stay, in their order, for its own exits to pop
        assert _stack() == ["script", "inner"]
        # AND popping again, with dsprof's pair gone, leaves the stack as it is
        saved_hooks_aside.pop_own(ours[0])
        assert _stack() == ["script", "inner"]
    finally:
        while autograd._top_saved_tensors_default_hooks(False) is not None:
            autograd._pop_saved_tensors_default_hooks()
