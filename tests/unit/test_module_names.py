"""A module not simply called through its root's forward gets one name, the same in the profile
(the module annotator's spans) and in the knobs (dsprof/module_paths.py ModuleNames): called
directly before its model, shared by two models, called from outside every model's tree (real
torch on CPU, the profiler as the witness)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dsprof.apply import from_env, install
from dsprof.collectors.modules import ModuleAnnotator
from dsprof.module_paths import join_knob_paths, split_knob_paths
from dsprof.vocabulary import DSPROF_MODULE_PREFIX


class Model(nn.Module):
    def __init__(self, shared: nn.Module | None = None,
                 helper: nn.Module | None = None) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 4)
        self.shared = shared if shared is not None else nn.Identity()
        self._helpers = [helper] if helper is not None else []  # a list: not registered

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shared(self.body(x))
        for h in self._helpers:
            x = h(x)
        return x


class Other(nn.Module):
    def __init__(self, shared: nn.Module) -> None:
        super().__init__()
        self.shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(x)


def _spans(calls: Callable[[], object]) -> list[str]:
    annotator = ModuleAnnotator()
    annotator.install()
    try:
        with torch.profiler.profile() as prof:
            calls()
    finally:
        annotator.uninstall()
    return [e.name[len(DSPROF_MODULE_PREFIX):] for e in prof.events()
            if e.name.startswith(DSPROF_MODULE_PREFIX)]


def _checkpointed(calls: Callable[[], object], paths: str) -> tuple[list[str], list[str]]:
    """(what DS_GRADIENT_CHECKPOINTING changed, what it could not find)."""
    applied = install(from_env({"DS_GRADIENT_CHECKPOINTING": paths}, "cpu"))
    try:
        calls()
    finally:
        applied.uninstall()
    report = applied.report()["DS_GRADIENT_CHECKPOINTING"]
    return report["checkpointed"], report.get("unmatched", [])


def _wraps(module: nn.Module) -> int:
    """How many checkpointing wrappers are stacked on the module's forward."""
    n, fwd = 0, module.forward
    while getattr(fwd, "__dsprof_checkpointed__", False) or hasattr(fwd, "own"):
        n += bool(getattr(fwd, "__dsprof_checkpointed__", False))
        fwd = getattr(fwd, "own", None)
    return n


def test_a_submodule_called_before_its_model_takes_its_path_in_the_model():
    # GIVEN a loop that calls the head directly, then the model
    x = torch.randn(2, 4)
    model = Model()

    def step() -> None:
        model.head(x)
        model(x)
        model.head(x)

    # THEN the profile calls it a root until its model is called, then Model.head
    assert _spans(step) == ["Linear", "Model", "Model.body", "Model.shared", "Model.head"]
    # AND the knob finds it by the profile's later name, once
    assert _checkpointed(step, "Model.head") == (["Model.head"], [])
    assert _wraps(model.head) == 1


def test_a_module_shared_by_two_models_keeps_its_first_models_path():
    # GIVEN one Linear registered in two models, the second called after the first
    x = torch.randn(2, 4)
    shared = nn.Linear(4, 4)
    first, second = Model(shared=shared), Other(shared)

    def step() -> None:
        first(x)
        second(x)
        first(x)

    # THEN the profile names it Model.shared under both models (it flipped to Other.shared,
    # under Model too, once Other was called)
    assert _spans(step) == ["Model", "Model.body", "Model.shared", "Other", "Model.shared",
                            "Model", "Model.body", "Model.shared"]
    # AND the knob finds it by that name, and not by the second model's, and a pattern that
    # matches the module in both models wraps it once
    assert _checkpointed(step, "Model.shared") == (["Model.shared"], [])
    assert _checkpointed(step, "Other.shared,Other") == (["Other"], ["Other.shared"])
    fresh = nn.Linear(4, 4)
    first, second = Model(shared=fresh), Other(fresh)
    assert _checkpointed(step, "*.shared,Other") == (["Model.shared", "Other"], [])
    assert _wraps(fresh) == 1


def test_a_module_outside_every_tree_is_named_after_its_caller():
    # GIVEN a Linear a model calls but does not register (kept in a plain list)
    x = torch.randn(2, 4)
    helper = nn.Linear(4, 4)
    model = Model(helper=helper)

    def step() -> None:
        model(x)
        model(x)

    # THEN the profile names it after the module that called it
    assert _spans(step)[:4] == ["Model", "Model.body", "Model.shared", "Model.Linear"]
    # AND the knob finds it by that name (it used to call it a root, "Linear")
    assert _checkpointed(step, "Model.Linear") == (["Model.Linear"], [])
    assert _checkpointed(step, "Linear")[0] == []


class HoldsForwardModule(nn.Module):
    """A model of the script's own with an attribute that happens to be called
    _forward_module: not Fabric's, so its name stays in the path."""

    def __init__(self) -> None:
        super().__init__()
        self._forward_module = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_module(x)


def test_a_fabric_model_is_named_as_the_model_it_wraps():
    import lightning as L

    from dsprof import module_paths

    # GIVEN models set up by Lightning Fabric (a _FabricModule holds each as _forward_module)
    fabric = L.Fabric(accelerator="cpu", devices=1)
    model = fabric.setup_module(Model())
    own = fabric.setup_module(HoldsForwardModule())
    x = torch.randn(2, 4)
    # WHEN they run under the annotator
    spans = _spans(lambda: (model(x), own(x)))
    # THEN each is named by its own class and attributes, with one span per call (the
    # wrapper's call of the model is the model's); the script's own attribute keeps its name
    assert spans == ["Model", "Model.body", "Model.shared", "HoldsForwardModule",
                     "HoldsForwardModule._forward_module"]
    assert "fabric" in module_paths.SEEN
    # AND the knobs take the same names, reached through the wrapper (model.body)
    changed, unmatched = _checkpointed(lambda: model(x), "Model.body")
    assert changed == ["Model.body"] and unmatched == []


class HeteroNet(nn.Module):
    """A heterogeneous graph's convolutions, keyed by ``str(edge_type)`` as some scripts key
    their ModuleDict: the key holds commas."""

    EDGES = (("paper", "cites", "paper"), ("author", "writes", "paper"))

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleDict({str(e): nn.Linear(4, 4) for e in self.EDGES})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(conv(x) for conv in self.convs.values())


def test_a_path_with_a_comma_is_one_path_in_a_knob_value():
    # GIVEN the path of one convolution, as a finding writes it into a knob value
    model = HeteroNet()
    wanted = "HeteroNet.convs.('paper', 'cites', 'paper')"
    value = join_knob_paths([wanted])
    assert value == "HeteroNet.convs.('paper'\\, 'cites'\\, 'paper')"
    assert split_knob_paths(value) == [wanted]
    # WHEN the knob checkpoints it
    changed, missing = _checkpointed(lambda: model(torch.ones(2, 4)), value)
    # THEN exactly that module, not three paths that match nothing
    assert changed == [wanted] and missing == []
    assert _wraps(model.convs[str(HeteroNet.EDGES[0])]) == 1
    assert _wraps(model.convs[str(HeteroNet.EDGES[1])]) == 0


def test_knob_values_split_as_written():
    paths = ["Net.a", "Net.b\\c", "Net.d,e", ""]
    assert split_knob_paths(join_knob_paths(paths)) == ["Net.a", "Net.b\\c", "Net.d,e"]
    assert split_knob_paths(" Net.a , Net.b ,, ") == ["Net.a", "Net.b"]  # by hand, as before
    assert split_knob_paths("Net.x\\y") == ["Net.x\\y"]  # a lone backslash stays
