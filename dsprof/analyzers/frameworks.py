"""The training framework a run used, and its own switch for a fix.

A user of Hugging Face's ``Trainer`` or of Lightning turns checkpointing, mixed precision or
DataLoader workers on with one argument; a hand-rolled recipe is the wrong advice for them.
The session records which frameworks the script imported (meta.json ``frameworks``); imported
traces fall back to module type names (``...PreTrainedModel`` classes end in ``ForCausalLM``,
``LMHeadModel``, ...). :func:`framework_fix` gives the line to put first in a finding's fix.
"""

from __future__ import annotations

from dsprof.analyzers.registry import Context

_HF_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForSequenceClassification", "ForMaskedLM",
                "PreTrainedModel", "ForConditionalGeneration", "ForTokenClassification")

# (framework, finding area) -> the framework's own switch
_SWITCHES = {
    ("transformers", "checkpointing"): (
        "# Hugging Face: TrainingArguments(..., gradient_checkpointing=True), or\n"
        "# model.gradient_checkpointing_enable() (checkpoints every decoder layer)"),
    ("transformers", "precision"): "# Hugging Face: TrainingArguments(..., bf16=True)",
    ("transformers", "dataloader"): (
        "# Hugging Face: TrainingArguments(..., dataloader_num_workers=N, "
        "dataloader_persistent_workers=True)"),
    ("lightning", "precision"): "# Lightning: Trainer(..., precision=\"bf16-mixed\")",
    ("lightning", "checkpointing"): (
        "# Lightning: wrap the blocks in configure_model() with torch.utils.checkpoint, or\n"
        "# FSDPStrategy(activation_checkpointing_policy={Block}) on multi-GPU"),
    ("lightning", "dataloader"): (
        "# Lightning: return DataLoader(..., num_workers=N, persistent_workers=True) from "
        "train_dataloader()"),
}


def frameworks(ctx: Context) -> set[str]:
    """Frameworks the run used: ``transformers``, ``lightning`` (also for pytorch_lightning)."""
    found = {str(f) for f in ctx.meta.get("frameworks") or []}
    if "pytorch_lightning" in found:
        found.add("lightning")
    if "transformers" not in found and ctx.run.has("modules"):
        types = [t for (t,) in ctx.run.sql("SELECT DISTINCT type FROM modules WHERE depth = 0")]
        if any(str(t).endswith(_HF_SUFFIXES) for t in types):
            found.add("transformers")
    return found


def framework_fix(ctx: Context, area: str) -> str:
    """The framework's own switch for ``area`` (checkpointing, precision, dataloader), as
    comment lines ending in a newline, or ""."""
    used = frameworks(ctx)
    lines = [text for (fw, a), text in _SWITCHES.items() if a == area and fw in used]
    return "".join(t + "\n" for t in lines)
