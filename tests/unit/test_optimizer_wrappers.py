"""Which enclosing ``step`` is an optimizer wrapper's, and that its class gets its own function
back (collectors/optimizer_wrappers.py)."""

from __future__ import annotations

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from dsprof.collectors.optimizer_wrappers import OptimizerWrappers
from dsprof.collectors.step_runtime import StepRuntime
from dsprof.collectors.step_sources import ClosureMarker


class Unhooked(torch.optim.Optimizer):
    """Opacus' shape: an Optimizer that never ran Optimizer.__init__."""

    def __init__(self, inner):
        self.original_optimizer = inner

    def step(self, closure=None):
        return self.original_optimizer.step()


class Hooked(torch.optim.Optimizer):
    """An Optimizer whose __init__ ran: torch patched its step and hooks see it."""

    def __init__(self, inner):
        super().__init__(inner.param_groups[0]["params"], {})
        self.inner = inner

    def step(self, closure=None):
        return self.inner.step()


class NotAnOptimizer:
    """Lightning's LightningOptimizer shape: holds the optimizer, is no Optimizer."""

    def __init__(self, inner):
        self._optimizer = inner

    def step(self, closure=None):
        return self._optimizer.step()


class Outer(torch.optim.Optimizer):
    """A wrapper of a wrapper: the outermost step is the phase."""

    def __init__(self, inner):
        self.wrapped = inner

    def step(self, closure=None):
        return self.wrapped.step()


def _stepping(make, runtime=None):
    """Step ``make(sgd)`` twice with a watch that looks at the inner SGD's steps."""
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    sgd = torch.optim.SGD([p], lr=0.1)
    runtime = runtime or StepRuntime()
    runtime.closures = ClosureMarker()
    watch = OptimizerWrappers(runtime, runtime.closures)
    watch.install()
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: watch.seen(opt))
    try:
        wrapper = make(sgd)
        wrapper.step()
        wrapper.step()
    finally:
        handle.remove()
    return watch, p


def test_an_unhooked_optimizer_that_holds_the_stepping_one_is_wrapped_then_given_back():
    original = Unhooked.__dict__["step"]
    runtime = StepRuntime()
    watch, p = _stepping(Unhooked, runtime)
    # THEN its class's step is timed from the second call (one wall interval a call)
    assert watch.classes == [f"{__name__}.Unhooked"]
    assert Unhooked.__dict__["step"] is not original
    assert Unhooked.step.__qualname__ == original.__qualname__  # pickle finds it by name
    assert runtime._wall_ns > 0 and runtime._wrapper_depth == 0
    assert torch.allclose(p.detach(), torch.full((3,), 0.8))  # both updates ran, once each
    # AND the session's end gives the class its own function back
    watch.uninstall()
    assert Unhooked.__dict__["step"] is original


def test_hooked_optimizers_and_wrappers_that_are_no_optimizer_are_left_alone():
    for cls in (Hooked, NotAnOptimizer):
        watch, _ = _stepping(cls)
        # THEN torch's own hooks see the first; the second is not read as an optimizer
        # (Lightning runs a mixed-precision step's closure outside the inner step)
        assert watch.classes == []
        assert not hasattr(cls.__dict__["step"], "_dsprof_wrapper_of")
        watch.uninstall()


def test_the_outermost_wrapper_of_a_chain_is_the_phase():
    inner_step, outer_step = Unhooked.__dict__["step"], Outer.__dict__["step"]
    watch, _ = _stepping(lambda sgd: Outer(Unhooked(sgd)))
    assert watch.classes == [f"{__name__}.Outer"]
    assert Unhooked.__dict__["step"] is inner_step
    watch.uninstall()
    assert Outer.__dict__["step"] is outer_step


def test_the_boundary_inside_a_wrappers_step_splits_its_time_between_the_steps():
    runtime = StepRuntime()
    runtime.closures = ClosureMarker()
    runtime.wrapper_starting()
    runtime.optimizer_starting()
    runtime.optimizer_ended()  # the inner optimizer's end: the boundary follows it
    runtime.take(True)
    first = runtime.optimizer_ns[-1]
    runtime.wrapper_ended()  # what the wrapper does after the inner step: the next step's
    runtime.take(True)
    assert first is not None and first > 0
    assert runtime.optimizer_ns[-1] is not None and runtime.optimizer_ns[-1] >= 0
    assert runtime._wall_at is None


class PosingAsItsOptimizer:
    """Lightning's LightningOptimizer and Fabric's shape: its class made a subclass of the
    class of the optimizer it holds."""

    def __init__(self, inner):
        self.__class__ = type("Posing" + type(inner).__name__,
                              (PosingAsItsOptimizer, type(inner)), {})
        self._optimizer = inner

    def step(self, closure=None):
        return self._optimizer.step()


def test_a_wrapper_posing_as_the_class_it_holds_is_left_to_its_framework():
    # (wrapping LightningOptimizer's step took the phase away: "optimizer 0.1%")
    watch, _ = _stepping(PosingAsItsOptimizer)
    assert watch.classes == []
    assert not hasattr(PosingAsItsOptimizer.__dict__["step"], "_dsprof_wrapper_of")
    watch.uninstall()


def test_torchs_patch_made_after_dsprofs_stays_at_the_end():
    # GIVEN a wrapper class dsprof wrapped, then torch patched again (Optimizer.__setstate__
    # of a pickled or deep-copied wrapper patches the class's step over dsprof's)
    original = Unhooked.__dict__["step"]
    watch, _ = _stepping(Unhooked)
    from torch.optim.optimizer import Optimizer

    Optimizer._patch_step_function(Unhooked.__new__(Unhooked))
    patched = Unhooked.__dict__["step"]
    assert getattr(patched, "hooked", False)
    # THEN the end of the session leaves torch's patch (it gave back the unpatched function)
    watch.uninstall()
    assert Unhooked.__dict__["step"] is patched
    Unhooked.step = original


def test_a_closure_inside_another_is_counted_once():
    import time

    marker = ClosureMarker()
    inner = marker.wrap(lambda: time.sleep(0.01))
    outer = marker.wrap(lambda: inner())  # a wrapper's own closure calling the script's
    outer()
    # THEN ~10 ms, not ~20 (the optimizer phase is the step less its closures)
    assert 0.009 < marker.take_ns() / 1e9 < 0.018
