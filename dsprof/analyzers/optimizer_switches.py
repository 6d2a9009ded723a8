"""Where an optimizer's ``fused``/``foreach`` switch goes when the script has no
``torch.optim.<cls>(model.parameters(), ...)`` line: ZeRO's constructor, skorch's net, Pyro's
dict of arguments, MMEngine's optim_wrapper dict, or the optimizer's own list of master
weights."""

from __future__ import annotations

from dsprof.analyzers.frameworks import MMENGINE, frameworks
from dsprof.analyzers.registry import Context


def skorch_optimizer_fix(cls: str, flag: str) -> str:
    """skorch builds the optimizer from the class it is given: its arguments go to the net with
    the ``optimizer__`` prefix (the script has no ``cls(model.parameters(), ...)`` line)."""
    return ("# skorch: the net builds the optimizer; its arguments take the optimizer__ prefix\n"
            f"net = NeuralNetClassifier(module, ..., optimizer=torch.optim.{cls}, "
            f"optimizer__{flag}=True)  # or NeuralNetRegressor / NeuralNet")


# torch optimizers pyro.optim wraps under the same name (PyroOptim: one per parameter site)
_PYRO_OPTIMIZERS = frozenset(("Adam", "AdamW", "SGD", "Adagrad", "Adadelta", "Adamax", "RMSprop",
                              "NAdam", "RAdam", "ASGD", "Rprop"))


def pyro_optimizer_fix(cls: str, flag: str) -> str:
    """Pyro builds a torch optimizer per ``pyro.param`` site from ``pyro.optim.<cls>``'s dict
    of arguments: the switch goes in that dict (its optimizer steps tensors no module owns, so
    it read as master weights: "torch.optim.Adam(master_params, ..., fused=True)")."""
    return ("# Pyro: pyro.optim builds a torch optimizer per parameter site from its dict of\n"
            "# arguments; put the switch there\n"
            f"optimizer = pyro.optim.{cls}({{\"lr\": ..., \"{flag}\": True}})")


def mmengine_optimizer_fix(cls: str, flag: str, zero: bool) -> str:
    """MMEngine's Runner builds the optimizer from ``optim_wrapper``'s ``optimizer`` dict,
    passing its keys but ``type`` to the class (mmengine 0.10.7: ``fused=True`` there gave an
    AdamW with ``defaults["fused"]`` True); its ZeroRedundancyOptimizer names the class in
    ``optimizer_type`` and passes the rest on. The script has no ``cls(...)`` line."""
    inner = (f'type="ZeroRedundancyOptimizer", optimizer_type="{cls}"' if zero
             else f'type="{cls}"')
    return ("# MMEngine: the Runner builds the optimizer from optim_wrapper's dict; its keys\n"
            "# are the optimizer's arguments (keep the wrapper's own, type=... included)\n"
            f"optim_wrapper=dict(..., optimizer=dict({inner}, lr=..., {flag}=True))")


def optimizer_holds_no_module_params(ctx: Context) -> bool:
    """Whether all the optimizer state the memory census of a ``dsprof run`` saw (source
    ``baseline``; an imported trace's categories name no owner) belongs to tensors no module
    owns: the optimizer steps a copy of the weights (fp32 master weights kept by hand beside
    a bf16 model), not ``model.parameters()``."""
    if not ctx.run.has("memory"):
        return False
    (unowned, total), = ctx.run.sql("""
        SELECT count(*) FILTER (WHERE module IS NULL OR module = ''), count(*) FROM memory
        WHERE category = 'optimizer_state' AND action = 'alloc' AND source = 'baseline'""")
    return bool(total) and unowned == total


def master_params_fix(cls: str, flag: str) -> str:
    """The fused/foreach switch for an optimizer built over tensors that are no module's
    parameters: its own list stays (``model.parameters()`` would step the low-precision
    model instead)."""
    return (f"# the optimizer steps tensors no module owns (master weights?): keep its list\n"
            f"optimizer = torch.optim.{cls}(master_params, ..., {flag}=True)")


def optimizer_switch_fix(ctx: Context, cls: str, flag: str) -> str | None:
    """Where the optimizer's ``fused``/``foreach`` switch goes when it is not
    ``torch.optim.<cls>(model.parameters(), ...)``: MMEngine's optim_wrapper dict, ZeRO's
    constructor, skorch's net, or the optimizer's own list of master weights; None for that
    plain line."""
    if MMENGINE in frameworks(ctx):
        return mmengine_optimizer_fix(cls, flag, under_zero(ctx))
    if under_zero(ctx):
        # ZeRO builds the optimizer on each rank's shard and passes its extra arguments on
        return (f"optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class="
                f"torch.optim.{cls}, ..., {flag}=True)  # passed on to {cls}")
    if "skorch" in frameworks(ctx):
        return skorch_optimizer_fix(cls, flag)
    if "pyro.optim" in frameworks(ctx) and cls in _PYRO_OPTIMIZERS:
        return pyro_optimizer_fix(cls, flag)
    if optimizer_holds_no_module_params(ctx):
        return master_params_fix(cls, flag)
    return None


def under_zero(ctx: Context) -> bool:
    """Whether the optimizer steps inside ZeroRedundancyOptimizer's (its span in the trace)."""
    return ctx.run.has("ops") and bool(ctx.run.sql(
        "SELECT EXISTS (SELECT 1 FROM ops WHERE name = "
        "'Optimizer.step#ZeroRedundancyOptimizer.step')")[0][0])
