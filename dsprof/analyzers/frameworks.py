"""The training framework a run used, and its own switch for a fix.

A user of Hugging Face's ``Trainer`` or of Lightning turns checkpointing, mixed precision or
DataLoader workers on with one argument; a hand-rolled recipe is the wrong advice for them.
The session records which frameworks the script imported (meta.json ``frameworks``); imported
traces fall back to module type names (``...PreTrainedModel`` classes end in ``ForCausalLM``,
``LMHeadModel``, ...). :func:`framework_fix` gives the line to put first in a finding's fix.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from dsprof.analyzers.registry import Context
from dsprof.render.safe_text import one_line

_HF_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForSequenceClassification", "ForMaskedLM",
                "PreTrainedModel", "ForConditionalGeneration", "ForTokenClassification")
# Classes that wrap a transformers model and end like one (PEFT's PeftModelForCausalLM, ...)
_WRAPPERS = ("Peft",)

# meta.json frameworks marker (collectors/process_facts.py, read as data here): the script's
# transformers names checkpointing activation_checkpointing; gradient_checkpointing warns there
_NEW_CHECKPOINTING = "transformers.activation_checkpointing"
# meta.json marker: the script built an accelerate.Accelerator (the HF Trainer builds one too:
# there TrainingArguments is the switch)
_ACCELERATOR = "accelerate.Accelerator"
# A dsprof run that never imported the HF Trainer but trains a transformers model (an Accelerate
# "no_trainer" loop, a hand loop): no TrainingArguments to set; the model's own method is the
# switch. "transformers" alone says neither: torchmetrics and lightning import it.
_HF_MODEL = "transformers.model"
_HF_MODEL_NEW = "transformers.model.activation_checkpointing"
# A Lightning Fabric loop (its setup() wraps the model in _FabricModule, the root of every
# forward): the script's own loop, so the Trainer's switches (Trainer(precision=...),
# ModelCheckpoint, train_dataloader()) are none of its; Fabric(precision=...) is. Importing
# lightning.fabric imports lightning.pytorch's Trainer too: only the modules tell them apart.
FABRIC = "lightning.fabric"
_FABRIC_MODULE = "_FabricModule"
# meta.json marker (collectors/process_facts.FABRIC_SETUP): a module walk met a _FabricModule
_FABRIC_SETUP = "lightning.fabric.setup"

# meta.json frameworks marker (collectors/process_facts.TRL_CONFIG): "trl.config:SFTConfig" for
# each TRL config class loaded; a TRL trainer takes its TrainingArguments as that class
_TRL_CONFIG = "trl.config:"
# meta.json frameworks marker (collectors/process_facts.HF_ARGUMENTS):
# "transformers.args:Seq2SeqTrainingArguments" when the script loaded transformers' own
# subclass (lazily loaded: only a script that names it); a Seq2SeqTrainer run was told
# TrainingArguments(...)
_HF_ARGUMENTS = "transformers.args:"
# "TrainingArguments(" as a name of its own (not the tail of Seq2SeqTrainingArguments)
_ARGUMENTS_CALL = re.compile(r"(?<![A-Za-z0-9_])TrainingArguments\(")

# MMEngine's Runner (meta.json frameworks, collectors/process_facts.py): the script hands it an
# optim_wrapper dict; AmpOptimWrapper is what runs the forward under autocast (train_step's
# optim_context), OptimWrapper the same loop in fp32
MMENGINE = "mmengine.runner"

# (framework, finding area) -> the framework's own switch
_SWITCHES = {
    ("transformers", "checkpointing"): (
        "# Hugging Face: TrainingArguments(..., gradient_checkpointing=True), or\n"
        "# model.gradient_checkpointing_enable() (checkpoints every decoder layer)"),
    # the script's transformers has the new names (the old ones warn there): instead of the above
    (_NEW_CHECKPOINTING, "checkpointing"): (
        "# Hugging Face: TrainingArguments(..., activation_checkpointing=True), or\n"
        "# model.activation_checkpointing_enable() (checkpoints every decoder layer)"),
    (_HF_MODEL, "checkpointing"): (
        "# Hugging Face: model.gradient_checkpointing_enable() (checkpoints every decoder "
        "layer)"),
    (_HF_MODEL_NEW, "checkpointing"): (
        "# Hugging Face: model.activation_checkpointing_enable() (checkpoints every decoder "
        "layer)"),
    ("transformers", "precision"): "# Hugging Face: TrainingArguments(..., bf16=True)",
    ("transformers", "dataloader"): (
        "# Hugging Face: TrainingArguments(..., dataloader_num_workers=N, "
        "dataloader_persistent_workers=True)"),
    ("lightning", "precision"): "# Lightning: Trainer(..., precision=\"bf16-mixed\")",
    # a batch-sized dim not a multiple of 8 (tensor_cores): the collator pads the batch
    ("transformers", "pad_tokens"): (
        "# Hugging Face: DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)\n"
        "# (DataCollatorForLanguageModeling and DataCollatorForSeq2Seq take it too)"),
    # CPU autocast that costs more than it saves (cpu_autocast): the same switches, off. The
    # HF one only where the HF Trainer was imported (a Lightning run imports transformers too)
    ("transformers.trainer", "autocast_off"): (
        "# Hugging Face Trainer: TrainingArguments(..., bf16=False)"),
    ("lightning", "autocast_off"): "# Lightning: Trainer(..., precision=\"32-true\")",
    ("transformers.trainer", "autocast_off_fp16"): (
        "# Hugging Face Trainer: TrainingArguments(..., fp16=False)"),
    ("lightning", "autocast_off_fp16"): "# Lightning: Trainer(..., precision=\"32-true\")",
    # a model built in bf16/fp16 on a CPU that emulates it (cpu_lowp_model): its dtype
    ("transformers", "model_fp32"): (
        "# Hugging Face: from_pretrained(..., dtype=torch.float32) (torch_dtype= in older "
        "transformers)"),
    (_HF_MODEL, "model_fp32"): (
        "# Hugging Face: from_pretrained(..., dtype=torch.float32) (torch_dtype= in older "
        "transformers)"),
    (_HF_MODEL_NEW, "model_fp32"): (
        "# Hugging Face: from_pretrained(..., dtype=torch.float32) (torch_dtype= in older "
        "transformers)"),
    ("lightning", "model_fp32"): (
        "# Lightning: Trainer(..., precision=\"32-true\") (\"bf16-true\" casts the model)"),
    # a model trained in fp64 on a CPU (tensor_cores' fp64 finding, analyzers/cpu_fp64.py):
    # Lightning's "64-true" makes fp64 the default dtype inside its own contexts and casts the
    # inputs, so set_default_dtype in the script is not its switch
    ("lightning", "fp64_off"): (
        "# Lightning: Trainer(..., precision=\"32-true\") in place of \"64-true\""),
    ("transformers", "fp64_off"): "# Hugging Face: from_pretrained(..., dtype=torch.float32)",
    (_HF_MODEL, "fp64_off"): "# Hugging Face: from_pretrained(..., dtype=torch.float32)",
    (_HF_MODEL_NEW, "fp64_off"): "# Hugging Face: from_pretrained(..., dtype=torch.float32)",
    # Accelerate enters autocast itself around the prepared model's forward: no autocast block
    # in the script to delete; mixed_precision given to Accelerator() wins over the launch config
    (_ACCELERATOR, "precision"): "# Accelerate: Accelerator(..., mixed_precision=\"bf16\")",
    (_ACCELERATOR, "autocast_off"): "# Accelerate: Accelerator(..., mixed_precision=\"no\")",
    (_ACCELERATOR, "autocast_off_fp16"): (
        "# Accelerate: Accelerator(..., mixed_precision=\"no\")"),
    (FABRIC, "precision"): "# Lightning Fabric: Fabric(..., precision=\"bf16-mixed\")",
    (FABRIC, "autocast_off"): "# Lightning Fabric: Fabric(..., precision=\"32-true\")",
    (FABRIC, "autocast_off_fp16"): "# Lightning Fabric: Fabric(..., precision=\"32-true\")",
    (FABRIC, "model_fp32"): (
        "# Lightning Fabric: Fabric(..., precision=\"32-true\") (\"bf16-true\" casts the "
        "model)"),
    (FABRIC, "fp64_off"): (
        "# Lightning Fabric: Fabric(..., precision=\"32-true\") in place of \"64-true\""),
    (MMENGINE, "precision"): (
        "# MMEngine: Runner(..., optim_wrapper=dict(type=\"AmpOptimWrapper\", "
        "dtype=\"bfloat16\", optimizer=...))"),
    (MMENGINE, "autocast_off"): (
        "# MMEngine: Runner(..., optim_wrapper=dict(type=\"OptimWrapper\", optimizer=...)) "
        "in place of AmpOptimWrapper"),
    (MMENGINE, "autocast_off_fp16"): (
        "# MMEngine: Runner(..., optim_wrapper=dict(type=\"OptimWrapper\", optimizer=...)) "
        "in place of AmpOptimWrapper"),
    ("lightning", "checkpointing"): (
        "# Lightning: wrap the blocks in configure_model() with torch.utils.checkpoint, or\n"
        "# FSDPStrategy(activation_checkpointing_policy={Block}) on multi-GPU"),
    ("lightning", "dataloader"): (
        "# Lightning: return DataLoader(..., num_workers=N, persistent_workers=True) from "
        "train_dataloader()"),
}


def _fabric_loop(ctx: Context, found: set[str]) -> bool:
    """The script's model was set up by Fabric: meta.json's marker, or (runs from before
    Fabric's wrapper was named as the model it wraps) a ``_FabricModule`` root."""
    if _FABRIC_SETUP in found:
        return True
    return bool(found & {"lightning", "pytorch_lightning"} and ctx.run.has("modules")
                and ctx.run.sql("SELECT count(*) FROM modules WHERE depth = 0 AND type = ?",
                                [_FABRIC_MODULE])[0][0])


def frameworks(ctx: Context) -> set[str]:
    """Frameworks the run used: ``transformers``, ``lightning`` (also for pytorch_lightning;
    the Trainer), :data:`FABRIC` (a Fabric loop, in its place)."""
    found = {str(f) for f in ctx.meta.get("frameworks") or []}
    if "pytorch_lightning" in found:
        found.add("lightning")
    if _fabric_loop(ctx, found):
        found -= {"lightning", "pytorch_lightning", _FABRIC_SETUP}
        found.add(FABRIC)
    if "transformers" not in found and ctx.run.has("modules"):
        types = [t for (t,) in ctx.run.sql("SELECT DISTINCT type FROM modules WHERE depth = 0")]
        if any(str(t).endswith(_HF_SUFFIXES) for t in types):
            found.add("transformers")
    return found


def _trains_hf_model(ctx: Context) -> bool:
    """Whether a module of the run is a transformers model (its class ends like one)."""
    if not ctx.run.has("modules"):
        return False
    types = [str(t) for (t,) in ctx.run.sql("SELECT DISTINCT type FROM modules")]
    return any(t.endswith(_HF_SUFFIXES) for t in types)


def fsdp_version(ctx: Context) -> int | None:
    """2 for a model sharded by ``fully_shard`` (FSDP2: its modules' classes become
    ``FSDP<Class>``, its ops ``FSDP::...``/``fsdp::...``), 1 for ``FullyShardedDataParallel``
    (FSDP1), None for neither: their switches for communication differ from DDP's (comm hooks,
    ``no_sync``) and from each other's."""
    if ctx.run.has("modules"):
        types = {str(t) for (t,) in ctx.run.sql("SELECT DISTINCT type FROM modules")}
        if "FullyShardedDataParallel" in types:
            return 1
        if any(t.startswith("FSDP") and t[4:5].isupper() for t in types):
            return 2
    if ctx.run.has("ops"):
        names = {str(n) for (n,) in ctx.run.sql(
            """SELECT DISTINCT name FROM ops WHERE name LIKE 'FullyShardedDataParallel%'
                 OR name LIKE 'FSDP::%' OR name LIKE 'fsdp::%' LIMIT 50""")}
        if any(n.startswith("FullyShardedDataParallel") for n in names):
            return 1
        if names:
            return 2
    return None


def tensor_parallel(ctx: Context) -> bool:
    """Whether the run's collectives are tensor parallelism's: functional collectives
    (``_c10d_functional::``, which DTensor issues for ``parallelize_module``'s
    ColwiseParallel/RowwiseParallel layers inside forward and backward) on a run with neither
    DDP nor FSDP. They move activations and their gradients in every parallelized block, not
    a step's gradients: DDP's switches (comm hooks, buckets, ``no_sync()``) do not apply, and
    accumulating micro-batches does not cut them."""
    if not ctx.run.has("ops") or fsdp_version(ctx) is not None:
        return False
    return bool(ctx.run.sql("""
        SELECT EXISTS (SELECT 1 FROM ops WHERE starts_with(name, '_c10d_functional::')
                         AND name NOT IN ('_c10d_functional::wait_tensor',
                                          '_c10d_functional::_wrap_tensor_autograd'))
           AND NOT EXISTS (SELECT 1 FROM ops WHERE starts_with(name, 'DistributedDataParallel')
                             OR starts_with(name, 'torch::distributed::reducer::'))""")[0][0])


def ddp_advice_skip_reason(ctx: Context) -> str | None:
    """For an analyzer whose advice is DDP's (buckets, wrapping in DDP): why it does not run on
    an FSDP or tensor-parallel run, or None."""
    fsdp = fsdp_version(ctx)
    if fsdp is not None:
        return (f"the model is sharded with FSDP{fsdp}: its collectives come one per sharded "
                "unit, overlapped by FSDP itself; comm_bound gives FSDP's own switches")
    if tensor_parallel(ctx):
        return ("the collectives are tensor parallelism's (DTensor's functional collectives, "
                "inside forward and backward), not a gradient sync: DDP's buckets do not "
                "apply; comm_bound says what does")
    return None


def framework_fix(ctx: Context, area: str) -> str:
    """The framework's own switch for ``area`` (checkpointing, precision, autocast_off,
    autocast_off_fp16, model_fp32, fp64_off, dataloader), as
    comment lines ending in a newline, or ""."""
    used = frameworks(ctx)
    if "transformers" in used and "transformers.trainer" not in used and \
            ctx.meta.get("frameworks") is not None:
        # the run recorded its imports and the HF Trainer is not among them: TrainingArguments
        # is no switch. (An imported trace cannot say: its HF model keeps the Trainer's.)
        new_names = _NEW_CHECKPOINTING in used
        used -= {"transformers", _NEW_CHECKPOINTING}
        if _trains_hf_model(ctx):
            used.add(_HF_MODEL_NEW if new_names else _HF_MODEL)
    if area == "checkpointing" and _NEW_CHECKPOINTING in used:
        used.discard("transformers")  # the new names' switch replaces the deprecated one
    if "transformers.trainer" in used:
        used.discard(_ACCELERATOR)  # the Trainer's own Accelerator: TrainingArguments says
    lines = [text for (fw, a), text in _SWITCHES.items() if a == area and fw in used]
    return hf_arguments(ctx, "".join(t + "\n" for t in lines))


def _marked(ctx: Context, prefix: str) -> str:
    """The classes meta.json's frameworks name after ``prefix`` (``SFTConfig``;
    ``SFTConfig / DPOConfig``), or ""."""
    names = sorted({one_line(str(f)[len(prefix):]) for f in
                    ctx.meta.get("frameworks") or [] if str(f).startswith(prefix)})
    return " / ".join(names[:3])


def trl_configs(ctx: Context) -> str:
    """The TRL config class(es) the run loaded (``SFTConfig``; ``SFTConfig / DPOConfig``),
    or ""."""
    return _marked(ctx, _TRL_CONFIG)


def hf_arguments(ctx: Context, fix: str) -> str:
    """``fix`` with ``TrainingArguments(`` named as the class the script builds: a TRL
    trainer's config (``SFTConfig``, ``DPOConfig``: TrainingArguments subclasses with the same
    fields), where the run loaded one; else transformers' own subclass the script loaded
    (``Seq2SeqTrainingArguments``); else as it is."""
    trl = trl_configs(ctx)
    name = trl or _marked(ctx, _HF_ARGUMENTS)
    if not name or not _ARGUMENTS_CALL.search(fix):
        return fix
    out = []
    for line in fix.split("\n"):
        if _ARGUMENTS_CALL.search(line):
            if trl:
                line = line.replace("# Hugging Face Trainer:", "# TRL:").replace(
                    "# Hugging Face:", "# TRL:").replace("# HF Trainer:", "# TRL:")
            line = _ARGUMENTS_CALL.sub(f"{name}(", line)
        out.append(line)
    return "\n".join(out)


# transformers' activation classes that compute GELU op by op, and the config value naming the
# same function as one library op (F.gelu; "gelu_pytorch_tanh" is GELUTanh, F.gelu(x,
# approximate="tanh"): what DS_LIBRARY_OP's gelu_tanh swaps in, so verify measures this switch).
_HF_HAND_GELU = {"NewGELUActivation": "gelu_pytorch_tanh", "FastGELUActivation":
                 "gelu_pytorch_tanh", "AccurateGELUActivation": "gelu_pytorch_tanh",
                 "GELUActivation": "gelu"}
# The config key that names the MLP activation, by the model's class-name prefix (transformers
# 5: GPT-2, GPT-J, GPT-Neo, OPT and CodeGen say activation_function; T5 dense_act_fn; BERT,
# LLaMA-style and most others hidden_act).
_HF_ACT_KEYS = (("GPT2", "activation_function"), ("GPTJ", "activation_function"),
                ("GPTNeo", "activation_function"), ("OPT", "activation_function"),
                ("CodeGen", "activation_function"), ("T5", "dense_act_fn"),
                ("MT5", "dense_act_fn"))


class HfActivation(NamedTuple):
    """A transformers model's own switch for its hand-written GELU."""

    model: str  # the model's class (the root of the module paths)
    key: str  # the config key naming the activation
    value: str  # the config value naming the library op
    classes: str  # the activation module classes found


def hf_activation(ctx: Context, modules: list[str]) -> HfActivation | None:
    """The switch when every one of ``modules`` is a
    transformers activation module that computes GELU op by op (the hand-written GELU found in
    them): the model's own switch is its config's activation, not an edit of library code.
    The key follows the model's class (``modules`` are named from it). Else None."""
    if not modules or not ctx.run.has("modules"):
        return None
    types = {str(t) for (t,) in ctx.run.sql(
        "SELECT DISTINCT type FROM modules WHERE name IN (SELECT unnest(?::VARCHAR[]))",
        [modules])}
    values = {_HF_HAND_GELU.get(t) for t in types}
    if len(values) != 1 or None in values:
        return None
    (value,) = values
    model = _hf_model_class(ctx, modules[0])
    key = next((k for prefix, k in _HF_ACT_KEYS if model.startswith(prefix)), "hidden_act")
    return HfActivation(model, key, str(value), ", ".join(sorted(types)))


def _hf_model_class(ctx: Context, module: str) -> str:
    """The transformers model class that holds ``module``: its outermost ancestor whose class
    is a transformers model. A wrapper (PEFT's ``PeftModelForCausalLM`` around a
    ``GPT2LMHeadModel``) names the paths, but the config key and ``from_pretrained`` are the
    wrapped model's. The root's name where no ancestor's class says (imported traces)."""
    parts = module.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts))]
    types = dict(ctx.run.sql(
        "SELECT name, any_value(type) FROM modules WHERE name IN (SELECT unnest(?::VARCHAR[])) "
        "GROUP BY name", [prefixes]))
    for name in prefixes:
        cls = str(types.get(name) or "")
        if cls.endswith(_HF_SUFFIXES) and not cls.startswith(_WRAPPERS):
            return cls
    return parts[0]


def hf_activation_fix(hf: HfActivation) -> str:
    """The config lines that swap a transformers hand-written GELU for the library op."""
    return (f"# Hugging Face: the model's config chose this activation ({hf.classes}); "
            f'"{hf.value}" is the\n# same function as one library op. Set it where the config '
            "is built:\n"
            f'config.{hf.key} = "{hf.value}"\n'
            f'# or: {one_line(hf.model)}.from_pretrained(name, {hf.key}="{hf.value}")')


def hf_library_module(ctx: Context, modules: list[str]) -> str | None:
    """The class of ``modules`` when they are transformers' own code: each sits inside a
    transformers model and its class carries that model's family name (``LlamaRMSNorm`` in a
    ``LlamaForCausalLM``, ``T5LayerNorm`` in a ``T5ForConditionalGeneration``). A fix that
    edits their forward edits the library; the user's switch is elsewhere. Else None."""
    if not modules or not ctx.run.has("modules"):
        return None
    found = set()
    for module in modules:
        model = _hf_model_class(ctx, module)
        family = next((model[:-len(s)] for s in _HF_SUFFIXES if model.endswith(s)), "")
        rows = ctx.run.sql("SELECT any_value(type) FROM modules WHERE name = ?", [module])
        cls = str(rows[0][0] or "") if rows else ""
        if not family or not cls.startswith(family):
            return None
        found.add(cls)
    return ", ".join(sorted(found))
