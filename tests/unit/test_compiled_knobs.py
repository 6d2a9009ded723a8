"""Module knobs on a model wrapped in torch.compile: the knob names the modules as the eager
profile named them (no ``OptimizedModule._orig_mod``), changes them inside the wrapper, and the
compiled program is the one the pasted change compiles to; a knob that finds nothing says so
(real torch.compile on CPU, a recording Dynamo backend to see the graphs)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from dsprof.apply import from_env, install
from dsprof.collectors.modules import ModuleAnnotator
from dsprof.module_paths import named_module_paths
from dsprof.reports.verification import knobs_not_applied
from dsprof.vocabulary import DSPROF_MODULE_PREFIX


class HandGELU(nn.Module):
    """The tanh GELU written out; ``pasted=True`` is the finding's fix pasted in."""

    def __init__(self, pasted: bool = False) -> None:
        super().__init__()
        self.pasted = pasted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pasted:
            return nn.functional.gelu(x, approximate="tanh")
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))
        return 0.5 * x * (1.0 + torch.tanh(inner))


class Block(nn.Module):
    def __init__(self, pasted: bool) -> None:
        super().__init__()
        self.up, self.act, self.down = nn.Linear(8, 16), HandGELU(pasted), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.act(self.up(x)))


class Model(nn.Module):
    def __init__(self, pasted: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(pasted) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x


class Recorder:
    """A Dynamo backend that runs each graph as traced and keeps the functions it calls."""

    def __init__(self) -> None:
        self.graphs: list[set[str]] = []

    def __call__(self, gm: torch.fx.GraphModule, inputs: list[Any]) -> Callable[..., Any]:
        self.graphs.append({getattr(n.target, "__name__", str(n.target))
                            for n in gm.graph.nodes if n.op == "call_function"})
        return gm.forward


def _compiled_steps(model: nn.Module, x: torch.Tensor, env: dict[str, str] | None,
                    style: str = "wrapper") -> tuple[list[torch.Tensor], Recorder,
                                                     dict[str, int], dict[str, Any]]:
    """Three training steps of ``torch.compile(model)`` (``style="method"``:
    ``model.compile()``), under the knobs ``env`` sets."""
    torch._dynamo.reset()
    counters.clear()
    applied = install(from_env(env, "cpu")) if env else None
    rec = Recorder()
    if style == "wrapper":
        compiled = torch.compile(model, backend=rec)
    else:
        model.compile(backend=rec)
        compiled = model
    outs = []
    try:
        for _ in range(3):
            out = compiled(x)
            out.sum().backward()
            outs.append(out.detach())
    finally:
        report = applied.report() if applied else {}
        if applied:
            applied.uninstall()
    seen = {"frames": counters["frames"]["total"], "graphs": counters["stats"]["unique_graphs"],
            "graph_breaks": sum(counters["graph_break"].values())}
    return outs, rec, seen, report


@pytest.mark.parametrize("style", ["wrapper", "method"])
def test_library_op_knob_swaps_inside_a_compiled_model_and_compiles_the_pasted_program(style):
    # GIVEN a model with a hand-written GELU, compiled as `model = torch.compile(model)` (or
    # `model.compile()`), its eager output, and the model with the fix pasted in, compiled so
    torch.manual_seed(0)
    model, x = Model(), torch.randn(4, 8)
    eager = model(x).detach()
    pasted = Model(pasted=True)
    pasted.load_state_dict(model.state_dict())
    _, pasted_rec, pasted_seen, _ = _compiled_steps(pasted, x, None, style)
    hand = Model()
    hand.load_state_dict(model.state_dict())
    _, hand_rec, _, _ = _compiled_steps(hand, x, None, style)
    assert any("tanh" in g for g in hand_rec.graphs)
    # WHEN the knob names the GELUs by their eager paths and the compiled model trains
    outs, rec, seen, report = _compiled_steps(
        model, x, {"DS_LIBRARY_OP": "Model.blocks.*.act=gelu_tanh"}, style)
    # THEN the modules the eager profile names are found through the wrapper and swapped
    assert report["DS_LIBRARY_OP"]["swapped"] == ["Model.blocks.0.act", "Model.blocks.1.act"]
    assert "unmatched" not in report["DS_LIBRARY_OP"]
    # AND the compiled program is the pasted one: the library GELU, no hand ops, and no graph
    # break, graph or frame more (the swap's first-call check ran uncompiled)
    assert rec.graphs == pasted_rec.graphs
    assert any("gelu" in g for g in rec.graphs) and not any("tanh" in g for g in rec.graphs)
    assert seen == pasted_seen == {"frames": 1, "graphs": 1, "graph_breaks": 0}
    # AND the output is the model's (the first call's own, the later ones the library op's)
    for out in outs:
        torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)


def test_checkpointing_knob_finds_the_blocks_of_a_compiled_model_without_recompiling():
    # GIVEN a compiled model's plain run
    torch.manual_seed(0)
    model, x = Model(), torch.randn(4, 8)
    _, _, plain_seen, _ = _compiled_steps(model, x, None)
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    # WHEN its blocks are checkpointed by their eager names
    _, _, seen, report = _compiled_steps(model, x, {"DS_GRADIENT_CHECKPOINTING": "Model.blocks.*"})
    # THEN both blocks are checkpointed inside the wrapper, the gradients are the same, and the
    # knob's hook (removed before the wrapper's forward is traced) costs no frame or graph
    assert report["DS_GRADIENT_CHECKPOINTING"]["checkpointed"] == ["Model.blocks.0",
                                                                  "Model.blocks.1"]
    assert all(getattr(b.forward, "__dsprof_checkpointed__", False) for b in model.blocks)
    for a, b in zip(grads, [p.grad for p in model.parameters()], strict=True):
        torch.testing.assert_close(a, b)
    assert seen == plain_seen


def test_the_profile_names_a_compiled_model_as_the_eager_one():
    # GIVEN a model, one of its blocks compiled on its own, and the whole model compiled
    model = Model()
    eager_names = [p for p, _ in named_module_paths(model)]
    model.blocks[1] = torch.compile(model.blocks[1], backend="eager")
    compiled = torch.compile(model, backend="eager")
    # THEN a walk names every module as in the eager model (a wrapper as what it wraps)
    names = [p for p, _ in named_module_paths(compiled)]
    assert sorted(set(names)) == sorted(eager_names)
    # AND the annotator's span of the compiled call is the model's, as the knob names it
    torch._dynamo.reset()
    annotator = ModuleAnnotator()
    annotator.install()
    try:
        with torch.profiler.profile() as prof:
            compiled(torch.randn(4, 8))
    finally:
        annotator.uninstall()
    spans = {e.name[len(DSPROF_MODULE_PREFIX):] for e in prof.events()
             if e.name.startswith(DSPROF_MODULE_PREFIX)}
    assert "Model" in spans and spans <= set(eager_names)


def test_a_knob_that_matched_nothing_says_so_in_the_log_meta_and_verify(caplog):
    # GIVEN a model called inside a compiled function: its calls happen inside Dynamo's trace,
    # where the knob's hook cannot walk modules, and torch.compile was not given the model
    torch._dynamo.reset()
    counters.clear()
    model, x = Model(), torch.randn(4, 8)
    applied = install(from_env({"DS_GRADIENT_CHECKPOINTING": "Model.blocks.*"}, "cpu"))
    step = torch.compile(lambda t: model(t).sum(), backend="eager")
    # WHEN it runs and the session ends
    for _ in range(2):
        step(x).backward()
    with caplog.at_level(logging.ERROR, logger="dsprof"):
        applied.uninstall()
    report = applied.report()
    # THEN the run says the fix was not applied: an error, meta.json's unmatched, and verify's
    # "not applied" line
    assert report["DS_GRADIENT_CHECKPOINTING"]["unmatched"] == ["Model.blocks.*"]
    assert "no module matched Model.blocks.*" in caplog.text
    assert knobs_not_applied({"knobs": report}) == [
        "DS_GRADIENT_CHECKPOINTING: no module matched Model.blocks.*"]
    # AND the knob's hooks, traced in, added no recompile
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("traced_with_hook", [True, False])
def test_a_global_hook_recompiles_a_compiled_forward_only_when_removed(traced_with_hook):
    """The torch 2.13 behaviour the docs describe (docs/decisions.md): Dynamo guards on the
    global hook dict's length only when the trace saw a hook. A hook added after the trace
    is no recompile, and it is not called for the modules inside the compiled code."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    torch._dynamo.reset()
    counters.clear()
    model, x = Model(), torch.randn(4, 8)
    compiled = torch.compile(lambda t: model(t), backend="eager")
    calls: list[str] = []

    def hook(module: nn.Module, args: Any) -> None:
        if not torch.compiler.is_compiling():
            calls.append(type(module).__name__)

    handle = register_module_forward_pre_hook(hook) if traced_with_hook else None
    compiled(x)
    if handle is None:
        handle = register_module_forward_pre_hook(hook)
        compiled(x)
        assert counters["stats"]["unique_graphs"] == 1 and calls == []
    handle.remove()
    compiled(x)
    assert counters["stats"]["unique_graphs"] == (2 if traced_with_hook else 1)


def test_library_op_knob_under_the_default_inductor_backend():
    # GIVEN a hand-GELU model and its eager output; the knob naming its GELUs
    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = Model(), torch.randn(4, 8)
    eager = model(x).detach()
    applied = install(from_env({"DS_LIBRARY_OP": "Model.blocks.*.act=gelu_tanh"}, "cpu"))
    try:
        # WHEN `model = torch.compile(model)` (Inductor) runs three times
        compiled = torch.compile(model)
        outs = [compiled(x).detach() for _ in range(3)]
    finally:
        applied.uninstall()
    # THEN the modules are swapped, and the compiled model computes what the eager one did
    assert applied.report()["DS_LIBRARY_OP"]["swapped"] == ["Model.blocks.0.act",
                                                            "Model.blocks.1.act"]
    assert all(type(b.act.forward).__name__ == "ChangedForward" for b in model.blocks)
    for out in outs:
        torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)
