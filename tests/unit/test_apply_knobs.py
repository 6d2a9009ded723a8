"""The in-process knobs (dsprof.apply), installed for real on CPU torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from dsprof.apply import KNOB_ENV, KNOBS, from_env, install, knob_class
from dsprof.errors import ConfigError


def test_every_registered_knob_reads_the_variable_it_is_listed_under():
    assert sorted(KNOB_ENV.values()) == sorted(KNOBS)
    for env, entry in KNOB_ENV.items():
        assert knob_class(entry).env == env


@pytest.mark.parametrize("env, message", [
    ({"DS_AUTOCAST": "fp8"}, "expected bf16, fp16 or off"),
    ({"DS_AUTOCAST": "fp16"}, "CPU autocast supports bf16"),
    ({"DS_OPTIMIZER_FUSED": "maybe"}, "expected 1 or 0"),
    ({"DS_COMPILE": " , "}, "give module paths"),
    ({"DS_DATALOADER_WORKERS": "0"}, "worker count >= 1"),
    ({"DS_DATALOADER_WORKERS": "four"}, "worker count >= 1"),
    ({"DS_TORCH_THREADS": "0"}, "thread count >= 1"),
    ({"DS_TORCH_THREADS": "all"}, "thread count >= 1"),
])
def test_bad_values_are_config_errors_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        from_env(env, "cpu")


def test_unset_or_empty_knobs_install_nothing():
    assert from_env({"DS_COMPILE": "", "OTHER": "1"}, "cpu") == []


def test_autocast_knob_runs_the_outer_forward_in_bf16_and_only_it():
    # GIVEN a model, and DS_AUTOCAST=bf16 installed
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    applied = install(from_env({"DS_AUTOCAST": "bf16"}, "cpu"))
    try:
        # WHEN the model runs
        out = model(torch.randn(4, 8))
        # THEN its matmuls ran in bf16, and autocast is off again after the forward
        assert out.dtype == torch.bfloat16
        assert not torch.is_autocast_enabled("cpu")
        assert applied.report()["DS_AUTOCAST"]["forwards"] == 1
    finally:
        applied.uninstall()
    # AND after uninstalling, the model is fp32 again
    assert model(torch.randn(4, 8)).dtype == torch.float32


def test_optimizer_knob_switches_adamw_to_fused_before_its_first_step():
    # GIVEN DS_OPTIMIZER_FUSED=1 and a plain AdamW
    model = nn.Linear(8, 8)
    applied = install(from_env({"DS_OPTIMIZER_FUSED": "1"}, "cpu"))
    try:
        opt = torch.optim.AdamW(model.parameters())
        model(torch.randn(2, 8)).sum().backward()
        # WHEN it steps
        with torch.profiler.profile() as prof:
            opt.step()
        # THEN the fused kernel ran and the group says so
        names = {e.name for e in prof.events()}
        assert "aten::_fused_adamw_" in names
        assert opt.param_groups[0]["fused"] is True
        assert applied.report()["DS_OPTIMIZER_FUSED"]["switched"] == ["AdamW"]
    finally:
        applied.uninstall()


def test_compile_knob_matches_one_path_component_per_star_and_not_nested_modules():
    # GIVEN DS_COMPILE with a wildcard over blocks, never called (no compile happens)
    knob = from_env({"DS_COMPILE": "Net.blocks.*"}, "cpu")[0]
    # THEN * matches one component: blocks.0 yes, blocks.0.fc no
    assert any(r.fullmatch("Net.blocks.0") for r in knob._regexes)
    assert not any(r.fullmatch("Net.blocks.0.fc") for r in knob._regexes)


def test_dataloader_workers_knob_gives_workers_to_loaders_with_fewer():
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.arange(8.0))
    applied = install(from_env({"DS_DATALOADER_WORKERS": "2"}, "cpu"))
    try:
        plain = DataLoader(data, batch_size=4)
        positional = DataLoader(data, 4, False, None, None, 0)  # num_workers given positionally
        fewer = DataLoader(data, batch_size=4, num_workers=1)
        chosen = DataLoader(data, batch_size=4, num_workers=3)
        assert [b[0].tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # still loads
    finally:
        applied.uninstall()
    plain._iterator._shutdown_workers()  # its persistent workers would outlive the test
    assert (plain.num_workers, plain.persistent_workers) == (2, True)
    assert positional.num_workers == 2
    # the pasted fix raises a loader's workers to N, never lowers the script's own choice
    assert (fewer.num_workers, fewer.persistent_workers) == (2, True)
    assert (chosen.num_workers, chosen.persistent_workers) == (3, False)
    assert applied.report()["DS_DATALOADER_WORKERS"]["loaders_changed"] == ["TensorDataset"] * 3
    assert DataLoader(data).num_workers == 0  # uninstalled


def test_torch_threads_knob_sets_the_intra_op_threads_and_leaves_them_set():
    before = torch.get_num_threads()
    (knob,) = from_env({"DS_TORCH_THREADS": "1"}, "cpu")
    try:
        knob.install()
        assert torch.get_num_threads() == 1
        # uninstalled at the session's end, the count stays what the script ran with: the
        # dataloaders table records it after the knobs are gone
        knob.uninstall()
        assert torch.get_num_threads() == 1 and knob.report() == {"threads": 1}
    finally:
        torch.set_num_threads(before)


DYNAMO_OPTIMIZE = """
import sys
import torch
from dsprof.apply import from_env, install

applied = install(from_env({"DS_AUTOCAST": sys.argv[1]}, "cpu")) if sys.argv[1] else None
assert "torch._dynamo" not in sys.modules  # (loaded by the next line, after the knob)
w = torch.randn(16, 16)


def forward(x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return x @ w


out = torch._dynamo.optimize("eager")(forward)(torch.randn(4, 16))
breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
print(out.dtype, applied.report()["DS_AUTOCAST"]["compiled"] if applied else "-", breaks)
"""


@pytest.mark.parametrize("knob, printed", [("", "torch.bfloat16 - 0"),
                                           ("off", "torch.float32 1 0")])
def test_autocast_off_reaches_a_region_compiled_through_dynamo_optimize(knob, printed):
    # GIVEN an older script's torch._dynamo.optimize (no torch.compile call), in a process
    # where Dynamo loads only after the knob is installed
    res = subprocess.run([sys.executable, "-c", DYNAMO_OPTIMIZE, knob], capture_output=True,
                         text=True, check=False, timeout=300)
    # THEN with DS_AUTOCAST=off its autocast region is compiled disabled by the knob's Dynamo
    # wrap, as the pasted enabled=False would run it, in the same graph: no graph break, and
    # the knob's report counts it (the wrap used to go in at torch.compile's first call only:
    # here Dynamo traced the wrapped __init__ instead, the report counted 0)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == printed.split()

