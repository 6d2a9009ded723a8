"""The corpus end to end: each model family under ``dsprof run`` on CPU (tests/corpus/corpus.py
says what runs and how; docs/compatibility.md lists, per model, what is checked and which
findings are right for it). One run per model, shared by every assertion on it.

In one process (``-n0``) the runs are started ahead for every corpus model the session
selected, one at a time (``CORPUS_JOBS=N``: N at a time), so the next run goes on while pytest
checks the last one; each model's tests wait for their own run. Two at a time was slower on a
shared 2-core machine (454 s against 362 s for the whole corpus), so one is the default. Under
xdist the other worker fills that gap: each model's run is made when its tests first ask for
it, in the worker's main thread, alone on the machine (``timed_runs``: its findings must clear
the run's noise), and the checks run beside other tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from dsprof.analyzers.registry import GPU_ONLY_KINDS
from tests import machine_share
from tests.corpus.corpus import (
    FUSED_OPTIMIZER,
    HAND_ATTENTION,
    HF_HAND_GELU,
    INFO_ONLY,
    MODELS,
    NO_FUSED_OPTIMIZER,
    SDPA_ATTENTION,
    Outcome,
    flops_error,
    measure,
    reference_flops,
    run_model,
)

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)


def _params():
    return [pytest.param(m, id=m.name, marks=[pytest.mark.slow] if m.slow else [])
            for m in MODELS]


@pytest.fixture(scope="session")
def corpus_runs(request, tmp_path_factory) -> Callable[[str], Outcome]:
    """name -> its run's outcome, for the corpus models this session selected."""
    out = tmp_path_factory.mktemp("corpus")
    if machine_share.worker_share is not None:  # xdist: each run recorded alone, when asked
        by_name = {m.name: m for m in MODELS}
        made: dict[str, Outcome] = {}

        def made_now(name: str) -> Outcome:
            if name not in made:
                with machine_share.recording():
                    made[name] = run_model(by_name[name], out)
            return made[name]

        yield made_now
        return
    selected = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        model = callspec.params.get("corpus") if callspec is not None else None
        if model is not None and model not in selected:
            selected.append(model)
    jobs = max(1, int(os.environ.get("CORPUS_JOBS", "1")))
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="corpus") as pool:
        runs: dict[str, Future] = {m.name: pool.submit(run_model, m, out) for m in selected}
        yield lambda name: runs[name].result()
        for future in runs.values():
            future.cancel()


@pytest.fixture(scope="module", params=_params())
def corpus(request, corpus_runs):
    model = request.param
    outcome = corpus_runs(model.name)
    assert outcome.code == 0, f"dsprof run failed ({outcome.code}):\n{outcome.stderr[-4000:]}"
    return model, outcome, measure(outcome)


def test_runs_ingests_and_no_analyzer_fails(corpus):
    model, outcome, m = corpus
    # the script ran all its iterations under dsprof, with its own exit status
    assert outcome.stdout.count(f"done {model.steps} steps") == model.ranks, outcome.stdout
    assert "[dsprof ERROR]" not in outcome.stderr, outcome.stderr[-4000:]
    assert m.failed == [], m.failed
    # every matmul/conv/attention/RNN op torch recorded got its FLOPs
    assert m.flops_unknown == {}


def test_steps_found_equal_steps_taken(corpus):
    model, _, m = corpus
    assert m.steps_found == {r: model.steps for r in range(model.ranks)}


def test_forward_and_backward_are_counted_as_such(corpus):
    _, _, m = corpus
    # module spans, ops inside them and autograd's ops are never optimizer/other, also when
    # forward and backward run inside optimizer.step(closure) (Lightning)
    assert m.misphased == 0
    assert m.phase_ms.get("forward", 0) > 0 and m.phase_ms.get("backward", 0) > 0, m.phase_ms


def test_ops_are_attributed_to_the_models_modules(corpus):
    model, _, m = corpus
    missing = [p for p in model.modules if p not in m.modules]
    assert not missing, f"missing {missing}; dsprof named {sorted(m.modules)[:20]}"
    assert m.flops_in_modules >= model.attributed


def test_flops_match_flop_counter(corpus):
    model, _, m = corpus
    # GIVEN FlopCounterMode on the same step, in this process
    expected = reference_flops(model)
    # THEN each profiled step of each rank is within 2 % of it
    assert len(m.step_flops) == 2 * model.ranks, m.step_flops
    for key, got in m.step_flops.items():
        err = flops_error(got, expected)
        assert err is not None and err <= 0.02, (key, got, expected)


def test_findings_hold_nothing_false(corpus):
    model, _, m = corpus
    # only the analyzers docs/compatibility.md expects for this model, and a checkpointing plan
    # only as information (no corpus model is short of memory)
    # ("attention.sdpa", info) only says that attention already runs through SDPA: true
    # wherever the analyzer saw SDPA ops, and it claims no saving
    unexpected = [(f["analyzer"], f["severity"], f["title"]) for f in m.findings
                  if (f["analyzer"] not in model.expect
                      or (f["analyzer"] in INFO_ONLY and f["severity"] != "info"))
                  and not (f["kind"] == "attention.sdpa" and f["severity"] == "info")]
    assert not unexpected


def test_no_gpu_advice_no_pressure_advice_and_no_outliers_on_a_cpu_run(corpus):
    _, _, m = corpus
    kinds = {(f["kind"], f["severity"]) for f in m.findings}
    # GPU-only advice (TF32, Tensor Core alignment) is a "when you move to a GPU" note on CPU
    assert not [k for k, _ in kinds if k.startswith(GPU_ONLY_KINDS)], kinds
    # no model runs short of memory: no batch-size advice, checkpointing only as information
    assert not [k for k, _ in kinds if k.startswith("batch.")], kinds
    assert not [k for k, sev in kinds if k == "memory.checkpointing" and sev != "info"], kinds
    # a steady run has no outlier steps (dsprof's own window and trace write are not evidence)
    # and, on several ranks, no straggler (a rank late by this machine's noise is not one)
    assert not [k for k, _ in kinds if k in ("steps.outliers", "steps.periodic",
                                             "steps.extra_work", "comm.straggler")], kinds


def test_attention_is_found_where_hand_written_and_sdpa_said_where_it_runs(corpus):
    model, _, m = corpus
    kinds = {f["kind"] for f in m.findings}
    if model.name in HAND_ATTENTION:
        # named once: by the attention analyzer, or by the fusion analyzer's priced chain
        (f,) = [f for f in m.findings
                if f["kind"] in ("fusion.hand_attention", "fusion.attention")]
        assert "scaled_dot_product_attention" in f["fix"]
    else:
        assert "fusion.hand_attention" not in kinds
    if model.name in SDPA_ATTENTION:
        assert "attention.sdpa" in kinds


def test_every_model_says_whether_the_fused_optimizer_advice_is_found_on_it():
    assert FUSED_OPTIMIZER.isdisjoint(NO_FUSED_OPTIMIZER)
    assert FUSED_OPTIMIZER | set(NO_FUSED_OPTIMIZER) == {m.name for m in MODELS}


def test_the_fused_optimizer_advice_counts_each_parameter_its_optimizers_update(corpus):
    model, _, m = corpus
    found = [f for f in m.findings
             if f["kind"] == "fusion.optimizer" and "fused=True" in f["fix"]]
    if model.name not in FUSED_OPTIMIZER:
        assert not found, f"fused advice where the corpus says none: {found[0]['title']}"
        pytest.skip(f"no fused-optimizer finding: {NO_FUSED_OPTIMIZER[model.name]}")
    assert found, "no fused-optimizer finding on a model that must have one"
    # GIVEN the optimizers one step of the script runs (gan: the generator's and the
    # discriminator's Adam, whose parameters the generator's backward also reaches)
    optimizers, params, with_grad = _optimizers_of_a_step(model)
    if not optimizers:
        # a framework's loop (Lightning): the reference step is its forward and backward, and
        # the script's one optimizer (configure_optimizers) takes every parameter, all of
        # which get a gradient
        optimizers, params = 1, with_grad
    # THEN one finding per class prices all of them, each parameter once
    (f,) = found
    assert f["data"]["param_tensors"] == len(params)
    assert f["data"]["param_bytes"] == sum(p.numel() * p.element_size()
                                           for p in params.values())
    assert f["data"].get("optimizers", 1) == optimizers


def _optimizers_of_a_step(model) -> tuple[int, dict, dict]:
    """How many optimizers one step of the script steps, the parameters they update (those
    with a gradient when their step starts), and every parameter of the modules the step
    called that has a gradient after it, by id."""
    import importlib
    import sys

    from torch.nn.modules.module import register_module_forward_pre_hook
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from tests.corpus.corpus import MODELS_DIR

    if str(MODELS_DIR) not in sys.path:
        sys.path.insert(0, str(MODELS_DIR))
    mod = importlib.import_module(model.script.removesuffix(".py"))
    seen: set[int] = set()
    params: dict[int, object] = {}

    def note(optimizer, args, kwargs) -> None:
        seen.add(id(optimizer))
        params.update((id(p), p) for g in optimizer.param_groups for p in g["params"]
                      if p.grad is not None)

    called: dict[int, object] = {}

    def call(module, args) -> None:  # a pre-hook's return value would replace the args
        called[id(module)] = module

    hooks = [register_optimizer_step_pre_hook(note), register_module_forward_pre_hook(call)]
    try:
        model.reference(mod)()
    finally:
        for hook in hooks:
            hook.remove()
    with_grad = {id(p): p for m in called.values() for p in m.parameters()
                 if p.grad is not None}
    return len(seen), params, with_grad


def test_a_transformers_hand_written_gelu_gets_the_config_switch(corpus):
    model, _, m = corpus
    gelu = [f for f in m.findings if f["kind"] == "fusion.hand_gelu"]
    if model.name not in HF_HAND_GELU:
        for f in gelu:  # the config switch is only for transformers' activation modules
            assert "activation_function" not in f["fix"], f["fix"]
        return
    # GIVEN GPT-2's NewGELUActivation (8 ops a call), found as a hand-written GELU
    (f,) = gelu
    # THEN the fix is the model's own switch, not an edit of library code
    assert 'config.activation_function = "gelu_pytorch_tanh"' in f["fix"], f["fix"]
    assert "NewGELUActivation" in f["title"]
    # AND that switch builds the op the verify knob swaps in (F.gelu, tanh form), which
    # computes what the hand-written one did
    import torch
    from transformers import GPT2Config
    from transformers.activations import ACT2FN

    assert f["apply"]["DS_LIBRARY_OP"].endswith("=gelu_tanh")
    x = torch.linspace(-6, 6, 1001)
    switched = ACT2FN["gelu_pytorch_tanh"]
    assert torch.allclose(switched(x), torch.nn.functional.gelu(x, approximate="tanh"))
    assert torch.allclose(switched(x), ACT2FN[GPT2Config().activation_function](x), atol=1e-6)


def test_compression_is_never_promised_more_than_the_bytes_can_take(corpus):
    _, _, m = corpus
    for f in m.findings:
        if f["kind"] != "comm.bound":
            continue
        # GIVEN the all-reduce bytes of a step (25.5 KiB on ddp_gloo: latency, on CPU)
        nbytes = f["data"]["options"]["allreduce_bytes"]
        # THEN the saving is at most half of what a ring moves (2x) at 100 MB/s
        assert f["saving_s"] <= 0.5 * 2 * nbytes / 1e8 + 1e-9, f["explanation"]
        if f["data"]["latency_bound"]:
            assert "no_sync()" in f["fix"] and f["saving_s"] == 0
