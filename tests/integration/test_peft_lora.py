"""PEFT LoRA fine-tuning (a frozen transformers model, adapters alone train) runs under
``dsprof run`` as without it, and the advice names the wrapped model's own switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.helpers import dsprof, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

pytest.importorskip("peft")

# LoRA on GPT-2's attention projection, as PEFT's examples write it: get_peft_model wraps the
# model (module paths start at PeftModelForCausalLM), the optimizer takes the trainable params
LORA = """
import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

torch.manual_seed(0)
base = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2,
                                  n_head=4))
model = get_peft_model(base, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True,
                                        task_type="CAUSAL_LM"))
model.print_trainable_parameters()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
for step in range(24):
    ids = torch.randint(0, 256, (8, 32))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    if step % 8 == 0:
        print(f"step {step} loss {loss.item():.4f}", flush=True)
model.save_pretrained("adapter")
print("trainable", sum(p.numel() for p in model.parameters() if p.requires_grad))
"""


def test_lora_fine_tuning_runs_as_without_dsprof_and_gets_gpt2s_config_switch(tmp_path):
    # GIVEN a LoRA loop over a frozen GPT-2, run bare in one folder
    script = write(tmp_path / "lora.py", LORA)
    (tmp_path / "bare").mkdir()
    (tmp_path / "prof").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env["OMP_NUM_THREADS"] = "1"
    bare = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path / "bare",
                          capture_output=True, text=True, timeout=180, check=False)
    # WHEN profiled in another
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), cwd=tmp_path / "prof")
    # THEN status, output and the saved adapter are the script's own
    assert bare.returncode == 0, bare.stderr
    assert res.code == 0, res.stderr
    assert res.stdout == bare.stdout
    assert sorted(p.name for p in (tmp_path / "prof" / "adapter").iterdir()) == sorted(
        p.name for p in (tmp_path / "bare" / "adapter").iterdir())
    # AND GPT-2's hand-written GELU is switched by GPT-2's config key on GPT-2's class
    # (PeftModelForCausalLM.from_pretrained loads adapters; GPT2Config has no hidden_act)
    assert dsprof("analyze", str(out)).code == 0
    findings = json.loads((out / "findings.json").read_text())["findings"]
    gelu = [f for f in findings if f["kind"] == "fusion.hand_gelu"]
    assert gelu, [f["kind"] for f in findings]
    assert 'config.activation_function = "gelu_pytorch_tanh"' in gelu[0]["fix"]
    assert "GPT2LMHeadModel.from_pretrained(" in gelu[0]["fix"]
    assert "Peft" not in gelu[0]["fix"]
