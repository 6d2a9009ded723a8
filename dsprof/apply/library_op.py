"""``DS_LIBRARY_OP=<module path>=<op>[,...]``: run the library op a finding tells you to paste.

The fusion analyzer's ``fusion.hand_gelu`` finding says "replace the hand-written GELU in
``FusionMLP.blocks.0.act`` with F.gelu"; verifying it through ``DS_COMPILE`` would measure
torch.compile, a different change. This knob makes the pasted change without editing the
user's file: the named modules' ``forward`` becomes the library op.

=================  ==========================================================================
``gelu``           ``F.gelu(x)``
``gelu_tanh``      ``F.gelu(x, approximate="tanh")``
``softmax``        ``torch.softmax(x, dim=-1)``
``rms_norm``       ``F.rms_norm(x, (d,), weight, eps)``: ``weight`` (or ``scale``, ``gamma``,
                   ``g``) and ``eps`` (or ``variance_epsilon``, ``epsilon``) read off the module
``layer_norm``     ``F.layer_norm(x, (d,), weight, bias, eps)``, the same attributes
=================  ==========================================================================

Faithful or nothing: the swap is made only where it computes what the module computed. On a
module's first call the knob runs its own forward (whose result the script gets, so that call
is unchanged) and the library op on the same input, without autograd; only when the two agree
(``allclose`` at the dtype's tolerance, same shape and dtype) does the library op serve the
later calls. A module with other inputs, another output, or a different result keeps its own
forward, and meta.json lists it under ``kept`` with the reason, so a verify of a finding the
knob could not apply says so instead of measuring nothing. Module paths are dsprof's names
(``FusionMLP.blocks.0.act``; ``*`` is one path component), as for ``DS_COMPILE``.

The knob finds its modules through a global forward pre-hook, which puts every module call of
the program on ``Module._call_impl``'s slow path: 77-92 us a step on the corpus's tiny GPT-2
(~35 module calls, thread CPU time, one thread), a third of what its GELU swap saves, and a cost
the pasted change does not have. So the hook is removed at the root walk after which every path
of the value has matched a module (a ``*`` path: at least one), before that root's forward runs
(the rule and what it misses: :mod:`dsprof.apply.module_knob`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dsprof.apply.changed_forward import ChangedForward, change_forward
from dsprof.apply.module_knob import ModuleKnob, path_regexes, split_paths
from dsprof.errors import ConfigError
from dsprof.log import logger

OPS = ("gelu", "gelu_tanh", "softmax", "rms_norm", "layer_norm")
_WEIGHT = ("weight", "scale", "gamma", "g")
_BIAS = ("bias", "beta", "b")
_EPS = ("eps", "variance_epsilon", "epsilon")
# When the module keeps no eps attribute: the values hand-written norms use.
_EPS_GUESSES = (1e-6, 1e-5, 1e-8, 1e-12)


def _attr_tensor(module: Any, names: tuple[str, ...], width: int) -> Any:
    import torch

    for name in names:
        t = getattr(module, name, None)
        if isinstance(t, torch.Tensor) and tuple(t.shape) == (width,):
            return t
    return None


def candidates(op: str, module: Any, x: Any) -> list[Callable[[Any], Any]]:
    """The library calls that may stand for ``module`` on inputs like ``x`` (norms: one per
    eps to try); the first that reproduces the module's output is kept."""
    import torch
    import torch.nn.functional as F

    if op == "gelu":
        return [lambda t: F.gelu(t)]
    if op == "gelu_tanh":
        return [lambda t: F.gelu(t, approximate="tanh")]
    if op == "softmax":
        return [lambda t: torch.softmax(t, dim=-1)]
    width = int(x.shape[-1])
    weight = _attr_tensor(module, _WEIGHT, width)
    own = [getattr(module, n) for n in _EPS if isinstance(getattr(module, n, None), float)]
    eps_values = own or list(_EPS_GUESSES)
    if op == "rms_norm":
        return [lambda t, e=e: F.rms_norm(t, (width,), weight, e) for e in eps_values]
    bias = _attr_tensor(module, _BIAS, width)
    return [lambda t, e=e: F.layer_norm(t, (width,), weight, bias, e) for e in eps_values]


def _tolerance(dtype: Any) -> tuple[float, float]:
    import torch

    if dtype in (torch.float16, torch.bfloat16):
        return 2e-2, 2e-2
    return 1e-4, 1e-5


def _row(width: int) -> Any:
    """A stand-in input for :func:`candidates`, which reads only the last dimension."""
    import torch

    return torch.empty(0, width)


def same_result(ours: Any, theirs: Any) -> bool:
    import torch

    if not (isinstance(ours, torch.Tensor) and isinstance(theirs, torch.Tensor)):
        return False
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        return False
    rtol, atol = _tolerance(ours.dtype)
    return bool(torch.allclose(ours.detach(), theirs, rtol=rtol, atol=atol, equal_nan=True))


class LibraryOpKnob(ModuleKnob):
    env = "DS_LIBRARY_OP"
    settles_on_first_call = True
    doc = ("comma-separated <module path>=<op> (gelu, gelu_tanh, softmax, rms_norm, "
           "layer_norm): those modules' forward becomes the library op, where it computes the same")

    def parse(self) -> None:
        self.ops: list[tuple[str, str]] = []
        for item in split_paths(self.value):
            path, sep, op = item.rpartition("=")
            if not sep or not path.strip() or op.strip() not in OPS:
                raise ConfigError(f"{self.env}={self.value!r}: give <module path>=<op> pairs "
                                  f"separated by commas, op one of {', '.join(OPS)}")
            self.ops.append((path.strip(), op.strip()))
        if not self.ops:
            raise ConfigError(f"{self.env}={self.value!r}: give <module path>=<op> pairs")
        self.patterns = [p for p, _ in self.ops]
        self._op_of = list(zip(path_regexes(self.patterns), (o for _, o in self.ops)))
        self.swapped: list[str] = []
        self.kept: dict[str, str] = {}
        self._ready()

    def _op_for(self, name: str) -> str:
        return next(op for regex, op in self._op_of if regex.fullmatch(name))

    def apply_to(self, name: str, module: Any) -> bool:
        # checked on the module's first call, where its input is known (see the docstring)
        op = self._op_for(name)
        change_forward(module, lambda m, own: self._checking_forward(name, m, own, op))
        return True

    def _checking_forward(self, name: str, module: Any, own: Callable[..., Any],
                          op: str) -> Callable[..., Any]:
        import torch

        def forward(*args: Any, **kwargs: Any) -> Any:
            out = own(*args, **kwargs)
            reason = None
            if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
                reason = "its forward takes more than one tensor"
            else:
                try:
                    with torch.no_grad():
                        tried = candidates(op, module, args[0])
                        chosen = next((i for i, f in enumerate(tried)
                                       if same_result(out, f(args[0]))), None)
                except Exception as exc:  # noqa: BLE001 - never fail the user's script
                    chosen, reason = None, f"{op} failed on its input: {exc}"
                if chosen is None and reason is None:
                    reason = f"{op} does not compute what its forward computes"
            if reason is not None:
                module.forward = own
                self.kept.setdefault(name, reason)
                logger.warning("%s: %s keeps its own forward: %s", self.env, name, reason)
            else:
                # made from the module's own attributes, so that a copy of it gets its own
                width = int(args[0].shape[-1])
                module.forward = ChangedForward(
                    module, own, lambda m, _own: candidates(op, m, _row(width))[chosen])
                if name not in self.swapped:
                    self.swapped.append(name)
                logger.info("%s: %s now runs %s (same result on its first call)", self.env,
                            name, op)
            return out

        return forward

    def uninstall(self) -> None:
        super().uninstall()
        if self.kept:
            logger.warning("%s: kept their own forward: %s", self.env,
                           "; ".join(f"{k} ({v})" for k, v in self.kept.items()))

    def report(self) -> dict[str, Any]:
        return {**super().report(), "swapped": self.swapped, "kept": self.kept}
