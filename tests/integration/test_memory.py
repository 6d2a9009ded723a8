"""Memory end to end on real torch (CPU): categories, per-module activations and the
checkpointing drop, the leak finding, the budget post-mortem, bad input, no tensors kept."""

from __future__ import annotations

import json
import re

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.conftest import EXAMPLES
from tests.integration.helpers import dsprof, meta, write
from tests.integration.scripts import TINY_TRAIN

SCHEDULE = ["--wait", "1", "--warmup", "1", "--active", "2"]
LM = [str(EXAMPLES / "transformer_lm.py"), "--steps", "5", "--batch-size", "4", "--seq-len", "32",
      "--d-model", "64", "--vocab", "512"]
B, T, D = 4, 32, 64
F32 = 4


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    """The Transformer example profiled twice: as is, and checkpointing every block."""
    out = {}
    for name, extra in (("plain", []), ("checkpoint", ["--checkpoint"])):
        path = tmp_path_factory.mktemp("lm") / name
        res = dsprof("run", "-q", "--no-analyze", "-o", str(path), *SCHEDULE, *LM, *extra)
        assert res.code == 0, res.stderr
        out[name] = path
    return out


def test_categories_and_live_total(lm_runs):
    with load(lm_runs["plain"]) as run:
        cats = {c for (c,) in run.sql("SELECT DISTINCT category FROM memory")}
        # THEN every category a training step has is found by storage identity
        assert {"parameter", "gradient", "optimizer_state", "activation", "input",
                "temporary"} <= cats
        # parameters alive before the window are the model's, exactly (2 layers, tied head)
        params = run.sql("""SELECT sum(bytes) FROM memory WHERE source = 'baseline'
                            AND category = 'parameter' AND device = 'cpu'""")[0][0]
        n_params = run.sql("SELECT params FROM modules WHERE depth = 0")[0][0]
        # parameters plus the causal-mask buffers (one bool [64, 64] per block)
        assert params == n_params * F32 + 2 * T * T
        # the series adds up to the live total, and keeps the peak
        bad = run.sql("""SELECT count(*) FROM memory_series WHERE total <> parameter + gradient
                         + optimizer_state + activation + input + temporary + other""")[0][0]
        assert bad == 0
        peak = run.sql("SELECT max(allocated) FROM memory")[0][0]
        assert run.sql("SELECT max(total) FROM memory_series")[0][0] == peak


def test_modules_activation_bytes_are_exact(lm_runs):
    with load(lm_runs["plain"]) as run:
        act = dict(run.sql("SELECT name, activation_bytes FROM modules"))
        own = dict(run.sql("SELECT name, self_activation_bytes FROM modules"))
    # THEN the MLP saves the first Linear's output and the GELU's output (each b*t*4d floats)
    assert act["TransformerLM.blocks.0.mlp"] == 2 * B * T * 4 * D * F32
    # a LayerNorm saves its mean and rstd (b*t floats each); its input belongs to its caller
    assert act["TransformerLM.blocks.0.ln1"] == 2 * B * T * F32
    # a Linear saves only its input (made elsewhere) and its weight (a parameter)
    assert act["TransformerLM.blocks.0.attn.q"] == 0
    # inclusive = own + children
    children = sum(v for k, v in act.items() if k.startswith("TransformerLM.blocks.0.")
                   and k.count(".") == 3)
    assert act["TransformerLM.blocks.0"] == own["TransformerLM.blocks.0"] + children


def test_checkpointing_each_block_shows_as_the_drop(lm_runs):
    with load(lm_runs["plain"]) as a, load(lm_runs["checkpoint"]) as b:
        blocks = a.sql("SELECT activation_bytes FROM modules WHERE name = 'TransformerLM.blocks'")[0][0]
        root_a = a.sql("SELECT activation_bytes FROM modules WHERE depth = 0")[0][0]
        root_b = b.sql("SELECT activation_bytes FROM modules WHERE depth = 0")[0][0]
        ckpt_blocks = b.sql("SELECT max(activation_bytes) FROM modules "
                            "WHERE name LIKE 'TransformerLM.blocks.%'")[0][0]
        peak_a = a.sql("SELECT max(allocated) FROM memory")[0][0]
        peak_b = b.sql("SELECT max(allocated) FROM memory")[0][0]
    # THEN the checkpointed blocks save nothing, and the model saves what they saved less
    assert ckpt_blocks == 0
    assert root_a - root_b == blocks
    assert peak_b < peak_a


def test_memory_command(lm_runs):
    res = dsprof("memory", str(lm_runs["plain"]), "--top", "5")
    assert res.code == 0, res.stderr
    assert "peak" in res.stdout and "activation" in res.stdout
    # an allocation site in the model's code, with its line number whatever the checkout's
    # path length (sites are shortened from the left, keeping file.py:LINE)
    assert re.search(r"transformer_lm\.py:\d+", res.stdout), res.stdout
    assert "blocks.0." in res.stdout  # module paths keep their tail
    assert "TransformerLM.bl…" not in res.stdout


def test_leak_finding_names_the_line(tmp_path):
    # GIVEN the leaky example, profiled over 4 steps
    script = EXAMPLES / "leaky_loss.py"
    line = next(i for i, text in enumerate(script.read_text().splitlines(), 1)
                if "val_loss_sum += val_loss  #" in text)
    results = {}
    for name, extra in (("leaky", []), ("fixed", ["--fixed"])):
        out = tmp_path / name
        res = dsprof("run", "-q", "--no-analyze", "-o", str(out), "--wait", "1", "--warmup", "1", "--active", "4",
                     str(script), "--steps", "7", *extra)
        assert res.code == 0, res.stderr
        with load(out) as run:
            results[name] = [f for f in analyze(run).findings if f.kind == "memory.leak"]
    # THEN the leak is found, with the growth per step and the line that causes it
    (leak,) = results["leaky"]
    assert f"leaky_loss.py:{line}" in leak.title
    assert "val_loss_sum += val_loss.item()" in leak.fix
    assert leak.data["growth_per_step"] > 64 << 10
    assert leak.confidence == "high"
    # and the corrected loop has none
    assert results["fixed"] == []


PLATEAU = """
from collections import deque
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(64, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
recent = deque(maxlen=12)  # the last 12 batches, 512 KiB each: full from step 12 on
for step in range(150):
    recent.append(torch.randn(2048, 64))
    opt.zero_grad()
    model(recent[-1]).square().mean().backward()
    opt.step()
"""


def test_a_buffer_filling_during_the_window_is_no_leak_when_the_run_keeps_nothing(tmp_path):
    # GIVEN a bounded buffer that grows 512 KiB a step through the profiled steps (6-9), then
    # stays full for the 140 steps after
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(write(tmp_path / "plateau.py", PLATEAU)))
    assert res.code == 0, res.stderr
    with load(out) as run:
        result = analyze(run, write=False)
    # THEN no leak is claimed: the RSS read at every step end did not grow with it
    assert [f for f in result.findings if f.kind == "memory.leak"] == []
    (why,) = [s["reason"] for s in result.skipped if s["analyzer"] == "memory_leak"]
    assert "live bytes on cpu rose 512.0 KiB a step" in why and "not a leak" in why


def test_a_real_leak_shows_in_the_rss_of_a_long_run(tmp_path):
    # GIVEN the leaky example over 60 steps: RSS is read at each of them
    out = tmp_path / "leaky"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), "--wait", "1", "--warmup", "1", "--active", "4",
                 str(EXAMPLES / "leaky_loss.py"), "--steps", "60")
    assert res.code == 0, res.stderr
    with load(out) as run:
        leaks = [f for f in analyze(run, write=False).findings if f.kind == "memory.leak"]
    # THEN the leak stands: the run's RSS grew with the graphs it kept
    (leak,) = leaks
    assert leak.confidence == "high"


def test_budget_stops_the_script_with_a_postmortem(tmp_path):
    tiny = write(tmp_path / "tiny_train.py", TINY_TRAIN)
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), *SCHEDULE, "--memory-budget", "4KiB", str(tiny))
    # THEN the script dies as if out of memory, with its own status, and dsprof says why
    assert res.code == 1
    assert "MemoryBudgetExceeded" in res.stderr
    assert "what filled memory" in res.stderr
    m = meta(out)
    assert m["exit_error"] == "MemoryBudgetExceeded" and m["settings"]["memory_budget"] == 4096
    oom = json.loads((out / "oom.json").read_text())
    (peak,) = oom["peaks"]
    assert peak["peak_bytes"] > 4096
    held = {h["key"]: h["bytes"] for h in peak["by_category"]}
    assert held["parameter"] == (32 * 64 + 64 + 64 * 4 + 4) * 4  # the Tiny model's
    assert sum(held.values()) + peak["unattributed"] == peak["peak_bytes"]
    # the env twin parses units too
    res = dsprof("run", "-o", str(tmp_path / "r2"), "--memory-budget", "lots", str(tiny))
    assert res.code == 2 and "--memory-budget" in res.stderr


def test_run_without_memory_events_gets_one_message(tmp_path):
    tiny = write(tmp_path / "tiny_train.py", TINY_TRAIN)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(tiny), env={"TINY_STEPS": "3"})
    assert res.code == 0, res.stderr  # 3 steps: the default schedule profiles none
    res = dsprof("memory", str(out))
    assert res.code == 2
    assert res.stderr.startswith("dsprof: error: ") and "no memory events" in res.stderr
    assert "Traceback" not in res.stderr
