"""Where training iterations show beside ``optimizer.step()``: its closure, and ``backward()``.

Closure. ``optimizer.step(closure)`` (PyTorch Lightning always; LBFGS by design) runs the
forward and backward *inside* torch's ``Optimizer.step#...`` span. A global optimizer step
pre-hook hands the optimizer a wrapper of the closure that runs it under a
``## closure ##`` annotation: same arguments, same return value, same exceptions, one Python
frame more. Ingest counts that span as forward (its backward ops name themselves backward), so
the optimizer phase is only the parameter update.

backward(). A loop that updates parameters by hand (no optimizer) has one ``backward()`` per
iteration. ``torch.autograd.backward`` is wrapped: ``Tensor.backward`` looks it up on the
module at every call, so both spellings pass through it, and the wrapper only reads a clock
after the call returned. The alternatives seen were worse: autograd has no global "backward
ended" hook (``Variable._execution_engine.queue_callback`` works only from inside a running
backward, so it needs a hook on some tensor first), and a ``TorchFunctionMode`` would see every
op of the program.

torch.autograd.grad(). Where a loop has neither an optimizer nor ``backward()``, its gradients
come from ``torch.autograd.grad`` (a hand-written update on the returned gradients) or
``torch.func.grad`` (which calls it): a training loop, whose module calls had been taken for
an inference run's steps ("121 inference forwards ... a generate() call's prefill" of a loop
that trains; two steps an iteration where a loss module is called too). Its ends count as
``backward()`` ends until the first ``backward()`` of the run: from then on ``backward()``
ends the iterations, and ``torch.autograd.grad`` is a part of one (a gradient penalty, a
meta-learning inner step). Calls from ``torch.autograd.functional`` (``jacobian``/``hessian``
call it once per output) are not counted. The wrapper is taken away for good once
torch.compile is seen: Dynamo handles ``torch.autograd.grad`` itself.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from dsprof.collectors.compile_watch import invisible_to_dynamo
from dsprof.frames import drop_own_frames, hidden_from_warnings, raised_in_signal_handler
from dsprof.log import logger
from dsprof.vocabulary import CLOSURE_SPAN


class ClosureMarker:
    """Brackets an optimizer's closure in a ``## closure ##`` profiler annotation."""

    def __init__(self) -> None:
        self._hook: Any = None
        self.closures = 0
        self._closure_ns = 0  # wall ns inside closures since the last take_ns()
        self._depth = 0  # closures running now, one inside another

    def take_ns(self) -> int:
        """Wall ns the optimizers' closures ran since the last take (then reset): forward and
        backward inside ``optimizer.step(closure)``, not the update."""
        ns, self._closure_ns = self._closure_ns, 0
        return ns

    def install(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        invisible_to_dynamo(ClosureMarker._pre_step, recursive=True)
        invisible_to_dynamo(_enter_span, recursive=True)
        invisible_to_dynamo(_exit_span, recursive=True)
        self._hook = register_optimizer_step_pre_hook(self._pre_step)

    def uninstall(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _pre_step(self, optimizer: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        import torch

        if torch.compiler.is_compiling():  # a compiled opt.step: Dynamo inlines this hook
            return None
        return self.timed_in(args, kwargs)

    def timed_in(self, args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """A ``step(self, closure=None)`` call's arguments with its closure timed and under
        the closure span (torch's hook, and an optimizer wrapper's step:
        collectors/optimizer_wrappers.py), or None when it was given none."""
        # args[0] is the optimizer itself (torch passes the bound call's full args)
        if "closure" in kwargs:
            closure = kwargs["closure"]
            if not callable(closure):
                return None
            return args, {**kwargs, "closure": self.wrap(closure)}
        if len(args) >= 2 and callable(args[1]):
            return (args[0], self.wrap(args[1]), *args[2:]), kwargs
        return None

    def wrap(self, closure: Callable[[], Any]) -> Callable[[], Any]:
        """``closure`` run under the closure span and timed; a closure wrapped already is as
        it is."""
        return self._wrap(closure)

    def _wrap(self, closure: Callable[[], Any]) -> Callable[[], Any]:
        if getattr(closure, "_dsprof_closure", False):
            return closure
        self.closures += 1

        now = time.perf_counter_ns

        def closure_in_span() -> Any:
            span = _enter_span()
            start = now()
            self._depth += 1
            try:
                return closure()
            finally:
                self._depth -= 1
                if not self._depth:  # a closure inside another's (a wrapper optimizer's new
                    self._closure_ns += now() - start  # closure calling the one it got): once
                _exit_span(span)

        invisible_to_dynamo(closure_in_span)
        closure_in_span._dsprof_closure = True  # type: ignore[attr-defined]
        closure_in_span.__wrapped__ = closure  # type: ignore[attr-defined]
        return closure_in_span


def _enter_span() -> Any:
    import torch

    span = torch.autograd.profiler.record_function(CLOSURE_SPAN)
    span.__enter__()
    return span


def _exit_span(span: Any) -> None:
    span.__exit__(None, None, None)


class AutogradCallWatch:
    """Calls ``on_end(end_ns)`` after every call of ``torch.autograd.<NAME>`` that returned
    normally on the thread that installed it, unless :meth:`counts` says its caller's file
    is not one to count.

    Args:
        on_end: told the run-clock time at which the call returned.
        now_ns: the run clock.
    """

    NAME = ""

    def __init__(self, on_end: Callable[[int], None], now_ns: Callable[[], int]):
        self.on_end = on_end
        self.now_ns = now_ns
        self.calls = 0
        self._original: Any = None
        self._wrapper: Any = None
        self._thread = 0
        # wall ns inside the outermost counted calls since the last take_ns() (a step's
        # backward time: steps.backward_ns)
        self._wall_ns = 0
        self._depth = 0

    @staticmethod
    def counts(caller: str) -> bool:
        return True

    def install(self) -> None:
        import sys
        import threading

        import torch.autograd

        original = getattr(torch.autograd, self.NAME)
        self._thread = threading.get_ident()
        ended, counts = self._ended, self.counts
        invisible_to_dynamo(AutogradCallWatch._ended, recursive=True)
        invisible_to_dynamo(type(self).counts, recursive=True)

        # a builtin: no frame for Dynamo to trace where a compiled region calls backward()
        now = time.perf_counter_ns

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = now()
            self._depth += 1
            try:
                out = original(*args, **kwargs)
            except BaseException as exc:
                drop_own_frames(exc)  # the script's `except` prints what it prints plain
                raise
            finally:
                self._depth -= 1
            if counts(sys._getframe(1).f_code.co_filename):
                ended(start)
            return out

        invisible_to_dynamo(hidden_from_warnings(wrapper))
        # torch's names, module included: pickle finds a function by them, and finds the
        # wrapper there (a spawn pool sent torch.autograd.backward failed to pickle it)
        functools.update_wrapper(wrapper, original)
        self._original, self._wrapper = original, wrapper
        setattr(torch.autograd, self.NAME, wrapper)

    def _ended(self, start: int) -> None:
        import threading

        if threading.get_ident() != self._thread:
            return
        self.calls += 1
        if self._depth == 0:  # not a call inside another (a backward hook's own backward)
            self._wall_ns += time.perf_counter_ns() - start
        try:
            self.on_end(self.now_ns())
        except Exception as caught:  # never fail the user's backward
            if raised_in_signal_handler(caught):
                raise  # the script's own signal handler's: it is the script's
            logger.debug("%s watch: listener failed", self.NAME, exc_info=True)

    @property
    def in_call(self) -> bool:
        """Whether a call is running now (an optimizer stepped from a backward hook)."""
        return self._depth > 0

    def take_ns(self) -> int:
        """Wall ns spent in the counted calls since the last take (then reset)."""
        ns, self._wall_ns = self._wall_ns, 0
        return ns

    def uninstall(self) -> None:
        """Put torch's own function back (unless someone wrapped ours since: then leave it)."""
        if self._original is None:
            return
        import torch.autograd

        if getattr(torch.autograd, self.NAME) is self._wrapper:
            setattr(torch.autograd, self.NAME, self._original)
        self._original = self._wrapper = None


class BackwardWatch(AutogradCallWatch):
    """Every ``torch.autograd.backward``, and so every ``Tensor.backward``."""

    NAME = "backward"


class GradWatch(AutogradCallWatch):
    """Every ``torch.autograd.grad`` but ``torch.autograd.functional``'s."""

    NAME = "grad"

    @staticmethod
    def counts(caller: str) -> bool:
        return not caller.endswith(_FUNCTIONAL)


# torch.autograd.functional's jacobian/hessian/vjp... call torch.autograd.grad per output
_FUNCTIONAL = ("autograd/functional.py", "autograd\\functional.py")


def optimizer_made() -> bool:
    """Whether the process has built a ``torch.optim.Optimizer`` (of any subclass): a script
    that has one trains, even if its first hundreds of forwards come before the first
    ``backward()`` (RL rollouts, an evaluation first, a per-sample loop). ``Optimizer.__init__``
    wraps its class's ``step`` once and marks it ``hooked`` (torch 2.x,
    ``_patch_step_function``); a torch without the mark reads as no optimizer."""
    from torch.optim import Optimizer

    todo: list[type] = [Optimizer]
    while todo:
        cls = todo.pop()
        if getattr(getattr(cls, "step", None), "hooked", False):
            return True
        todo.extend(cls.__subclasses__())
    return False
