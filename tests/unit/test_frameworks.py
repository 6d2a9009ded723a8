"""The framework's own switch in the fix: Hugging Face Trainer, Lightning; DDP recognised."""

from __future__ import annotations

import pytest

from dsprof.analyzers.comm_overlap import _buckets_per_step, uses_ddp
from dsprof.analyzers.frameworks import FABRIC, framework_fix, frameworks
from dsprof.analyzers.registry import Context
from dsprof.ingest.importer import import_traces
from dsprof.run import load
from dsprof.rundir import RunDir
from tests.conftest import trace_dir
from tests.unit.test_noise import make_run


def _with_frameworks(path, names):
    run_dir = make_run(path, [10.0] * 8)
    rd = RunDir(run_dir)
    rd.update_meta(frameworks=names)
    return run_dir


def test_hugging_face_gets_gradient_checkpointing_true(tmp_path):
    names = ["transformers", "transformers.trainer", "accelerate"]
    with load(_with_frameworks(tmp_path / "hf", names)) as run:
        ctx = Context(run)
        assert "transformers" in frameworks(ctx)
        assert "gradient_checkpointing=True" in framework_fix(ctx, "checkpointing")
        assert "bf16=True" in framework_fix(ctx, "precision")
        assert "dataloader_num_workers" in framework_fix(ctx, "dataloader")


def test_lightning_gets_its_trainer_switches_and_plain_torch_gets_none(tmp_path):
    with load(_with_frameworks(tmp_path / "pl", ["pytorch_lightning"])) as run:
        assert 'precision="bf16-mixed"' in framework_fix(Context(run), "precision")
    with load(_with_frameworks(tmp_path / "plain", [])) as run:
        assert framework_fix(Context(run), "checkpointing") == ""


def test_a_fabric_loop_gets_fabrics_switches_not_the_trainers():
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import SCRIPT, table

    def run_of(root, marker=()):
        # (importing lightning.fabric imports the Trainer's package too: both are recorded)
        return Run.from_tables(meta={**SCRIPT, "frameworks": ["transformers", "lightning",
                                                              *marker]},
                               modules=table({"rank": 0, "name": root, "type": root,
                                              "depth": 0}))

    # GIVEN a Fabric loop: fabric.setup() made _FabricModule the root of every forward
    ctx = Context(run_of("_FabricModule"))
    # THEN Fabric's own precision switch, and none of the Trainer's: no Trainer(precision=),
    # no train_dataloader() (the script builds its DataLoader), no ModelCheckpoint
    assert frameworks(ctx) >= {FABRIC} and "lightning" not in frameworks(ctx)
    assert framework_fix(ctx, "precision") == (
        '# Lightning Fabric: Fabric(..., precision="bf16-mixed")\n')
    assert 'Fabric(..., precision="32-true")' in framework_fix(ctx, "autocast_off")
    assert framework_fix(ctx, "dataloader") == "" and framework_fix(ctx, "checkpointing") == ""
    # AND so does a run whose session met the wrapper (named as the model it wraps: the
    # root is the script's class, and meta.json has the marker)
    marked = Context(run_of("Net", ["lightning.fabric.setup"]))
    assert frameworks(marked) >= {FABRIC} and "lightning" not in frameworks(marked)
    assert framework_fix(marked, "checkpointing") == ""
    # AND a LightningModule under the Trainer keeps the Trainer's
    assert 'Trainer(..., precision="bf16-mixed")' in framework_fix(Context(run_of("LitNet")),
                                                                    "precision")


def test_an_accelerator_gets_accelerates_switch_unless_the_hf_trainer_built_it(tmp_path):
    # GIVEN a script that built an accelerate.Accelerator itself
    with load(_with_frameworks(tmp_path / "acc", ["accelerate", "accelerate.Accelerator"])) as run:
        ctx = Context(run)
        # THEN mixed precision is Accelerator's argument, on and off
        assert 'Accelerator(..., mixed_precision="bf16")' in framework_fix(ctx, "precision")
        assert 'Accelerator(..., mixed_precision="no")' in framework_fix(ctx, "autocast_off")
    # GIVEN the HF Trainer, which builds its own Accelerator
    names = ["transformers", "transformers.trainer", "accelerate", "accelerate.Accelerator"]
    with load(_with_frameworks(tmp_path / "trainer", names)) as run:
        # THEN the switch is TrainingArguments' alone
        fix = framework_fix(Context(run), "autocast_off")
        assert "bf16=False" in fix and "Accelerate" not in fix
    # GIVEN accelerate imported only (transformers imports it to load a model): no switch
    with load(_with_frameworks(tmp_path / "imported", ["accelerate"])) as run:
        assert framework_fix(Context(run), "precision") == ""


def test_transformers_without_the_hf_trainer_gets_no_training_arguments():
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import SCRIPT, table

    def run_of(names, root):
        return Run.from_tables(meta={**SCRIPT, "frameworks": names}, modules=table(
            {"rank": 0, "name": root, "type": root, "depth": 0}))

    # GIVEN a plain PyTorch model in a run that imported torchmetrics (which imports
    # transformers): no Hugging Face switch at all
    ctx = Context(run_of(["transformers"], "Net"))
    assert framework_fix(ctx, "dataloader") == "" and framework_fix(ctx, "checkpointing") == ""
    # GIVEN an Accelerate loop over a GPT-2 (HF's "no_trainer" examples): the model's own
    # checkpointing switch, Accelerate's for precision, and no TrainingArguments anywhere
    names = ["transformers", "accelerate", "transformers.activation_checkpointing",
             "accelerate.Accelerator"]
    ctx = Context(run_of(names, "GPT2LMHeadModel"))
    assert framework_fix(ctx, "checkpointing") == (
        "# Hugging Face: model.activation_checkpointing_enable() (checkpoints every decoder "
        "layer)\n")
    assert framework_fix(ctx, "precision").startswith("# Accelerate:")
    assert not [a for a in ("checkpointing", "precision", "dataloader", "autocast_off")
                if "TrainingArguments" in framework_fix(ctx, a)]
    # GIVEN an imported trace of an HF model (no record of what the script imported): the
    # Trainer's switches, as before
    ctx = Context(Run.from_tables(meta=SCRIPT, modules=table(
        {"rank": 0, "name": "GPT2LMHeadModel", "type": "GPT2LMHeadModel", "depth": 0})))
    assert "TrainingArguments" in framework_fix(ctx, "dataloader")


def test_ddp_with_buckets_gets_no_all_reduce_during_backward_advice(tmp_path):
    # GIVEN a real 2-rank DDP trace (rank 0): DDP's reducer buckets the gradients
    path = trace_dir("hta_a100_2rank_nccl_r0") / "nccl_data.json.gz"
    run_dir, _ = import_traces([path], tmp_path / "ddp")
    with load(run_dir.path) as run:
        ctx = Context(run)
        # THEN DDP is recognised, with more than one bucket per step
        assert uses_ddp(ctx) and (_buckets_per_step(ctx) or 0) > 1
        from dsprof.analyzers.registry import analyze

        found = analyze(run, write=False).findings
    assert not [f for f in found if f.kind == "comm.poor_overlap"]


@pytest.mark.parametrize(("model", "act", "key", "value"), [
    ("GPT2LMHeadModel", "NewGELUActivation", "activation_function", "gelu_pytorch_tanh"),
    ("BertForMaskedLM", "GELUActivation", "hidden_act", "gelu"),
    ("T5ForConditionalGeneration", "NewGELUActivation", "dense_act_fn", "gelu_pytorch_tanh"),
])
def test_a_transformers_hand_gelu_is_switched_by_its_models_own_config_key(model, act, key,
                                                                             value):
    from types import SimpleNamespace

    from dsprof.analyzers.frameworks import hf_activation, hf_activation_fix
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import SCRIPT, table

    # GIVEN a model whose MLP activation module is transformers' op-by-op GELU
    path = f"{model}.layer.0.mlp.act"
    run = Run.from_tables(meta=SCRIPT, modules=table(
        {"rank": 0, "name": model, "type": model, "depth": 0},
        {"rank": 0, "name": path, "type": act, "depth": 4}))
    # WHEN its hand-written GELU gets the model's own switch
    hf = hf_activation(SimpleNamespace(run=run), [path])
    # THEN the config key is that model family's, and the fix names the model's class
    assert hf is not None and (hf.key, hf.value) == (key, value)
    fix = hf_activation_fix(hf)
    assert f'config.{key} = "{value}"' in fix and f"{model}.from_pretrained(" in fix


def test_a_gelu_module_that_is_not_transformers_gets_no_config_switch():
    from types import SimpleNamespace

    from dsprof.analyzers.frameworks import hf_activation
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import SCRIPT, table

    run = Run.from_tables(meta=SCRIPT, modules=table(
        {"rank": 0, "name": "MLP.act", "type": "MyGELU", "depth": 1}))
    assert hf_activation(SimpleNamespace(run=run), ["MLP.act"]) is None


def test_a_peft_wrapped_models_gelu_gets_the_wrapped_models_config_key():
    from types import SimpleNamespace

    from dsprof.analyzers.frameworks import hf_activation, hf_activation_fix
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import SCRIPT, table

    # GIVEN a GPT-2 wrapped by PEFT's get_peft_model: the paths start at the wrapper's class
    root = "PeftModelForCausalLM"
    path = f"{root}.base_model.model.transformer.h.0.mlp.act"
    run = Run.from_tables(meta=SCRIPT, modules=table(
        {"rank": 0, "name": root, "type": root, "depth": 0},
        {"rank": 0, "name": f"{root}.base_model", "type": "LoraModel", "depth": 1},
        {"rank": 0, "name": f"{root}.base_model.model", "type": "GPT2LMHeadModel", "depth": 2},
        {"rank": 0, "name": f"{root}.base_model.model.transformer", "type": "GPT2Model",
         "depth": 3},
        {"rank": 0, "name": path, "type": "NewGELUActivation", "depth": 7}))
    # WHEN its hand-written GELU gets the model's own switch
    hf = hf_activation(SimpleNamespace(run=run), [path])
    # THEN the key is GPT-2's (hidden_act does not exist on GPT2Config: setting it changes
    # nothing) and from_pretrained is the wrapped model's (PeftModel's loads adapters)
    assert hf is not None and hf.key == "activation_function"
    fix = hf_activation_fix(hf)
    assert "GPT2LMHeadModel.from_pretrained(" in fix and "Peft" not in fix


def test_a_transformers_with_activation_checkpointing_gets_that_switch_not_the_deprecated_one(
        tmp_path):
    # GIVEN a run whose transformers names checkpointing activation_checkpointing (the marker
    # the session records), its Trainer imported
    names = ["transformers", "transformers.trainer", "transformers.activation_checkpointing"]
    with load(_with_frameworks(tmp_path / "hf5", names)) as run:
        fix = framework_fix(Context(run), "checkpointing")
        # THEN the fix names the switch it accepts (gradient_checkpointing warns there)
        assert "activation_checkpointing=True" in fix
        assert "activation_checkpointing_enable()" in fix
        assert "gradient_checkpointing" not in fix
        # AND the other switches are unchanged
        assert "bf16=True" in framework_fix(Context(run), "precision")


@pytest.mark.parametrize("imports", [
    "from transformers import TrainingArguments",
    "from transformers import GPT2Config, GPT2LMHeadModel",
])
def test_the_session_records_whether_the_scripts_transformers_has_activation_checkpointing(
        imports):
    import subprocess
    import sys

    transformers = pytest.importorskip("transformers")
    # GIVEN this environment's transformers (does it have the new name?)
    expected = hasattr(transformers.PreTrainedModel, "activation_checkpointing_enable")
    # WHEN a process that imported its Trainer's arguments or only a model lists frameworks
    code = (f"{imports}\nfrom dsprof.collectors.process_facts import frameworks_loaded\n"
            "print(frameworks_loaded())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    # THEN the marker is there exactly when that transformers has activation_checkpointing
    assert "'transformers'" in out
    assert ("transformers.activation_checkpointing" in out) == expected


@pytest.mark.parametrize(("model", "norm", "expected"), [
    ("LlamaForCausalLM", "LlamaRMSNorm", "LlamaRMSNorm"),
    ("T5ForConditionalGeneration", "T5LayerNorm", "T5LayerNorm"),
    ("Net", "RMSNorm2", None),  # the script's own model: its norm is the script's code
    ("LlamaForCausalLM", "MyRMSNorm", None),  # a module the script put into a Llama
])
def test_a_norm_is_transformers_code_only_inside_its_own_model_family(model, norm, expected):
    from types import SimpleNamespace

    from dsprof.analyzers.frameworks import hf_library_module
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import SCRIPT, table

    # GIVEN a norm module (a hand-written RMSNorm was found in it), under PEFT's wrapper
    root = "PeftModelForCausalLM"
    path = f"{root}.base_model.model.model.norm"
    run = Run.from_tables(meta=SCRIPT, modules=table(
        {"rank": 0, "name": root, "type": root, "depth": 0},
        {"rank": 0, "name": f"{root}.base_model", "type": "LoraModel", "depth": 1},
        {"rank": 0, "name": f"{root}.base_model.model", "type": model, "depth": 2},
        {"rank": 0, "name": path, "type": norm, "depth": 4}))
    # WHEN asked whether it is transformers' own code
    # THEN only a class of the model's family inside a transformers model is
    assert hf_library_module(SimpleNamespace(run=run), [path]) == expected


@pytest.mark.parametrize("names", [
    ["transformers"],  # an older transformers
    ["transformers", "accelerate", "transformers.activation_checkpointing"],  # transformers 5
])
def test_a_transformers_model_built_in_bf16_gets_the_loaders_dtype_switch(names):
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import SCRIPT, table

    # GIVEN a hand loop over a GPT-2 (no HF Trainer) whose script's transformers is old or new
    ctx = Context(Run.from_tables(meta={**SCRIPT, "frameworks": names}, modules=table(
        {"rank": 0, "name": "GPT2LMHeadModel", "type": "GPT2LMHeadModel", "depth": 0})))
    # THEN the model-dtype fix names the loader's dtype argument, both spellings (a GPT-2 in
    # bf16 on the AVX2 EPYC gave the plain-PyTorch lines alone with transformers 5)
    fix = framework_fix(ctx, "model_fp32")
    assert fix.startswith("# Hugging Face: from_pretrained(..., dtype=torch.float32)")
    assert "torch_dtype=" in fix and "TrainingArguments" not in fix
    # AND Lightning's: its precision, which casts the model in bf16-true
    ctx = Context(Run.from_tables(meta={**SCRIPT, "frameworks": ["lightning"]}))
    assert framework_fix(ctx, "model_fp32").startswith(
        '# Lightning: Trainer(..., precision="32-true")')


def test_pyros_optimizer_switch_goes_in_its_dict(tmp_path):
    from dsprof.analyzers.optimizer_switches import optimizer_switch_fix

    # GIVEN a run that stepped pyro.optim's Adam (a torch Adam per parameter site)
    with load(_with_frameworks(tmp_path / "pyro", ["pyro.optim"])) as run:
        fix = optimizer_switch_fix(Context(run), "Adam", "fused")
    # THEN the switch is in pyro.optim.Adam's dict, not a torch.optim line over master weights
    assert fix is not None and 'pyro.optim.Adam({"lr": ..., "fused": True})' in fix
    assert "master_params" not in fix
    # AND without pyro the plain line is the caller's
    with load(_with_frameworks(tmp_path / "plain", [])) as run:
        assert optimizer_switch_fix(Context(run), "Adam", "fused") is None


def test_a_trl_trainer_gets_its_configs_switches(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("trl")
    # GIVEN a process that imported TRL's SFT trainer and config, as a TRL script does
    code = ("from trl import SFTConfig, SFTTrainer\n"
            "from dsprof.collectors.process_facts import frameworks_loaded\n"
            "print(frameworks_loaded())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=240, check=True).stdout
    # THEN the session records the config class it builds (TrainingArguments' subclasses only:
    # not TRL's ModelConfig, nor its private base)
    assert "'trl.config:SFTConfig'" in out
    assert "ModelConfig" not in out and "_BaseConfig" not in out
    # AND the HF Trainer's switches name that class (a TRL script has no TrainingArguments)
    names = ["transformers", "transformers.trainer", "trl.config:SFTConfig"]
    with load(_with_frameworks(tmp_path / "sft", names)) as run:
        ctx = Context(run)
        assert framework_fix(ctx, "autocast_off") == "# TRL: SFTConfig(..., bf16=False)\n"
        assert "SFTConfig(..., dataloader_num_workers=N" in framework_fix(ctx, "dataloader")
        assert "TrainingArguments" not in framework_fix(ctx, "precision")
        from dsprof.analyzers.frameworks import hf_arguments
        from dsprof.analyzers.host_syncs import _fix
        nan = hf_arguments(ctx, _fix("bool", "transformers/trainer.py:1956", None, "_run_epoch"))
        assert nan.endswith("args = SFTConfig(..., logging_nan_inf_filter=False)")


def test_a_seq2seq_trainer_gets_its_arguments_class(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("transformers")
    # GIVEN a process that built its arguments as a Seq2SeqTrainer script does, and one that
    # imported the seq2seq trainer but builds plain TrainingArguments
    facts = ("from dsprof.collectors.process_facts import frameworks_loaded\n"
             "print(frameworks_loaded())")
    seq2seq = subprocess.run(
        [sys.executable, "-c", "from transformers import Seq2SeqTrainer, "
         "Seq2SeqTrainingArguments\n" + facts],
        capture_output=True, text=True, timeout=240, check=True).stdout
    plain = subprocess.run(
        [sys.executable, "-c", "from transformers import Seq2SeqTrainer, Trainer, "
         "TrainingArguments\n" + facts],
        capture_output=True, text=True, timeout=240, check=True).stdout
    # THEN the session records the subclass for the first only (transformers loads its module
    # when the script names the class)
    assert "'transformers.args:Seq2SeqTrainingArguments'" in seq2seq
    assert "transformers.args:" not in plain
    # AND the Trainer's switches name it, under the Hugging Face label (a Seq2SeqTrainer
    # script of the sweep was told TrainingArguments(..., logging_nan_inf_filter=False))
    names = ["transformers", "transformers.trainer", "transformers.activation_checkpointing",
             "transformers.args:Seq2SeqTrainingArguments"]
    with load(_with_frameworks(tmp_path / "s2s", names)) as run:
        ctx = Context(run)
        assert framework_fix(ctx, "checkpointing").startswith(
            "# Hugging Face: Seq2SeqTrainingArguments(..., activation_checkpointing=True)")
        from dsprof.analyzers.frameworks import hf_arguments
        from dsprof.analyzers.host_syncs import _fix
        nan = hf_arguments(ctx, _fix("bool", "transformers/trainer.py:1956", None, "_run_epoch"))
        assert nan.endswith("args = Seq2SeqTrainingArguments(..., logging_nan_inf_filter=False)")
        # AND a fix that names the class already is left as it is
        assert hf_arguments(ctx, "Seq2SeqTrainingArguments(x)\n") == "Seq2SeqTrainingArguments(x)\n"


# what an MMEngine Runner script's run records (mmengine 0.10.7 imports transformers and
# accelerate with its Runner, not the HF Trainer)
_MMENGINE_RUN = ["transformers", "accelerate", "transformers.activation_checkpointing",
                 "mmengine.runner"]


def test_an_mmengine_runners_optimizer_switch_goes_in_its_optim_wrapper_dict(tmp_path):
    from dsprof.analyzers.optimizer_switches import optimizer_switch_fix

    # GIVEN a run whose AdamW the Runner built from optim_wrapper=dict(optimizer=dict(...))
    with load(_with_frameworks(tmp_path / "mme", _MMENGINE_RUN)) as run:
        fix = optimizer_switch_fix(Context(run), "AdamW", "fused")
        foreach = optimizer_switch_fix(Context(run), "SGD", "foreach")
    # THEN the switch is a key of that dict (the Runner passes it to AdamW), not a
    # torch.optim.AdamW(model.parameters(), ...) line the script does not have
    assert fix is not None and (
        'optim_wrapper=dict(..., optimizer=dict(type="AdamW", lr=..., fused=True))' in fix)
    assert "torch.optim" not in fix and "model.parameters()" not in fix
    assert foreach is not None and 'dict(type="SGD", lr=..., foreach=True)' in foreach


@pytest.mark.parametrize("area", ["autocast_off", "autocast_off_fp16"])
def test_an_mmengine_runners_autocast_is_switched_off_by_its_optim_wrapper(tmp_path, area):
    # GIVEN an MMEngine run (its AmpOptimWrapper runs the forward under autocast)
    with load(_with_frameworks(tmp_path / "mme", _MMENGINE_RUN)) as run:
        fix = framework_fix(Context(run), area)
    # THEN the fix builds the plain wrapper in its place
    assert fix == ('# MMEngine: Runner(..., optim_wrapper=dict(type="OptimWrapper", '
                   'optimizer=...)) in place of AmpOptimWrapper\n')


def test_an_mmengine_run_gets_no_training_arguments(tmp_path):
    # GIVEN an MMEngine run: transformers is imported (by mmengine), its Trainer is not
    with load(_with_frameworks(tmp_path / "mme", _MMENGINE_RUN)) as run:
        ctx = Context(run)
        fixes = {area: framework_fix(ctx, area) for area in (
            "checkpointing", "precision", "autocast_off", "autocast_off_fp16", "dataloader",
            "pad_tokens", "model_fp32", "fp64_off")}
    # THEN no area names TrainingArguments; precision names the Runner's AmpOptimWrapper
    assert not any("TrainingArguments" in fix or "Hugging Face" in fix
                   for fix in fixes.values()), fixes
    assert 'optim_wrapper=dict(type="AmpOptimWrapper", dtype="bfloat16"' in fixes["precision"]


def test_the_session_records_an_mmengine_runner():
    import subprocess
    import sys

    pytest.importorskip("mmengine.runner")
    # WHEN a process that imported MMEngine's Runner lists its frameworks
    code = ("from mmengine.runner import Runner\n"
            "from dsprof.collectors.process_facts import frameworks_loaded\n"
            "print(frameworks_loaded())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    # THEN the Runner is among them, and the HF Trainer is not
    assert "'mmengine.runner'" in out and "'transformers.trainer'" not in out
