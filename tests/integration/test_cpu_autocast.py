"""bf16 autocast on CPU that makes training slower (issue 19): real runs of examples/autocast_mlp.py
and of a Lightning ``precision="bf16-mixed"`` script under ``dsprof run``, and ``DS_AUTOCAST=off``,
the knob that applies the finding's fix."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from dsprof.apply.autocast import AutocastKnob
from tests.integration.helpers import analyzed_here, dsprof, meta, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

REPO = Path(__file__).resolve().parents[2]
MLP = str(REPO / "examples" / "autocast_mlp.py")
SCHEDULE = ("--wait", "1", "--warmup", "1", "--active", "2")
KIND = "precision.cpu_autocast_slower"


def profile(tmp_path: Path, name: str, *script: str, env: dict[str, str] | None = None,
            timed: bool = True) -> tuple[Path, dict]:
    run = tmp_path / name
    res = dsprof("run", "-q", "--no-analyze", "-o", str(run), *SCHEDULE, *script, env=env,
                 timed=timed)
    assert res.code == 0, res.stderr
    return run, analyzed_here(run)


def autocast_findings(found: dict) -> list[dict]:
    return [f for f in found["findings"] if f["analyzer"] == "cpu_autocast"]


def reason(found: dict) -> str:
    return next(s["reason"] for s in found["skipped"] if s["analyzer"] == "cpu_autocast")


def test_a_small_mlp_under_bf16_autocast_gets_the_finding_with_its_casts(tmp_path):
    # GIVEN the MLP 64 -> 256 -> 256 -> 10 at batch 32 under bf16 autocast on CPU
    _, found = profile(tmp_path, "bf16", MLP, "--steps", "12")
    # THEN autocast is found to cost time, with the casts it adds as evidence
    (f,) = autocast_findings(found)
    assert f["kind"] == KIND and f["saving_s"] > 0
    # 3 Linear layers: weight and bias cast in forward and their gradients back in backward,
    # the input cast in, the logits' .float() and its gradient: 15 casts a step
    assert f["data"]["casts_per_step"] == 15
    assert "casts (aten::_to_copy fp32<->bf16)" in f["evidence"][0]["text"]
    assert any("aten::addmm bf16" in e["text"] for e in f["evidence"])
    # AND the fix is plain PyTorch's switch, applied by DS_AUTOCAST=off
    assert "enabled=False" in f["fix"] and "Lightning" not in f["fix"]
    assert f["apply"] == {"DS_AUTOCAST": "off"}
    assert f["verify"].startswith("dsprof verify ")


FP16_MLP = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                      nn.Linear(256, 10))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
for step in range(12):
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
"""


def test_fp16_autocast_is_priced_with_fp16s_own_costs(tmp_path):
    # GIVEN the same kind of MLP under fp16 autocast on CPU (no GradScaler)
    script = tmp_path / "fp16_mlp.py"
    script.write_text(FP16_MLP)
    run, found = profile(tmp_path, "fp16", str(script))
    isa = meta(run)["precision"]["cpu_fp16"]
    if isa == "avx512_fp16":
        # THEN with AVX512-FP16 (and no AMX-FP16): priced from shapes with fp16's own prices
        # (fp16 never beat fp32 there), in fp16's words, never bf16's verdict
        (f,) = autocast_findings(found)
        assert f["title"].startswith("Turn fp16 autocast off: its casts, fp16 matmuls")
        assert f["data"]["low_precision"] == "fp16" and f["data"]["bf16_priced_from"] == "shapes"
        assert f["saving_s"] > 0 and "bf16" not in f["title"] + f["explanation"] + f["fix"]
        assert "AVX512-FP16 and no AMX-FP16" in f["explanation"]
        assert "dtype=torch.float16, enabled=False" in f["fix"]
        return
    if isa != "none":
        # THEN with AMX-FP16 (not calibrated): no verdict either way, and the reason says so
        assert autocast_findings(found) == []
        why = reason(found)
        assert why.startswith("fp16 autocast: ") and "bf16 pays" not in why, why
        return
    # THEN where fp16 is emulated (no AVX512-FP16 or AMX-FP16: CI's AVX2 CPU), it is priced
    # from the profile as emulated bf16 is, in fp16's words and with fp16's switch
    (f,) = autocast_findings(found)
    assert f["title"].startswith("Turn fp16 autocast off: fp16 is emulated on this CPU")
    assert f["data"]["low_precision"] == "fp16" and f["data"]["bf16_priced_from"] == "profile"
    assert "dtype=torch.float16, enabled=False" in f["fix"] and "bf16" not in f["fix"]
    assert "neither AVX512-FP16 nor AMX-FP16" in f["explanation"]


def test_the_same_mlp_in_fp32_gets_none(tmp_path):
    # (no bf16 op, no cast: no finding whatever the times, so the run needs no quiet)
    _, found = profile(tmp_path, "fp32", MLP, "--steps", "12", "--fp32", timed=False)
    assert autocast_findings(found) == []
    assert reason(found) == "no bf16/fp16 matmul or convolution ran"


def test_large_matmuls_get_none_where_bf16_pays_and_the_emulation_priced_where_it_cannot(
        tmp_path):
    # GIVEN 256 x 1024 @ 1024 x 1024 matmuls: bf16 on AMX ran them 3-5x faster than fp32; a
    # CPU without AVX512-BF16 or AMX runs them in PyTorch's emulated kernels, ~50x slower
    run, found = profile(tmp_path, "large", MLP, "--steps", "8", "--batch", "256", "--width",
                         "1024")
    if meta(run)["precision"]["cpu_bf16"] != "none":
        # THEN with bf16 in hardware: no finding, and the analyzer says why
        assert autocast_findings(found) == []
        assert reason(found).startswith("bf16 pays here")
        return
    # THEN emulated (an AVX2 machine, as CI's): a finding priced from the profiled bf16 ops,
    # most of the step, never "bf16 pays here" from AMX's prices
    (f,) = autocast_findings(found)
    assert f["title"].startswith("Turn bf16 autocast off: bf16 is emulated on this CPU")
    assert f["data"]["bf16_priced_from"] == "profile"
    assert f["data"]["bf16_gemm_s"] > 20 * f["data"]["fp32_priced_s"], f["data"]
    # the saving is most of the measured step (fp32_step_s is the step less the saving)
    assert f["saving_s"] > 0.5 * (f["data"]["fp32_step_s"] + f["saving_s"]), f["data"]


def test_the_knob_runs_cpu_autocast_regions_in_fp32():
    linear = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    compile_before = torch.compile
    knob = AutocastKnob("off", "cpu")
    knob.install()
    try:
        # the signature Dynamo binds an autocast call against is autocast's own
        assert "dtype" in inspect.signature(torch.autocast).parameters
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = linear(x).dtype
            enabled = torch.is_autocast_enabled("cpu")
        with torch.cpu.amp.autocast(dtype=torch.bfloat16):  # the older spelling, a subclass
            old_spelling = linear(x).dtype
    finally:
        knob.uninstall()
    assert (inside, enabled, old_spelling) == (torch.float32, False, torch.float32)
    assert knob.report() == {"dtype": "off", "disabled": 2, "compiled": 0}
    # uninstalled: autocast is itself again, and so is torch.compile
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x).dtype == torch.bfloat16
    assert torch.compile is compile_before


def test_ds_autocast_off_makes_the_scripts_forward_fp32(tmp_path):
    run = tmp_path / "off"
    res = dsprof("run", "--no-analyze", "-o", str(run), *SCHEDULE, MLP, "--steps", "6",
                 "--print-dtype", env={"DS_AUTOCAST": "off"}, timed=False)
    assert res.code == 0, res.stderr
    assert "forward dtype torch.float32" in res.stdout
    assert meta(run)["knobs"]["DS_AUTOCAST"] == {"value": "off", "dtype": "off", "disabled": 6,
                                                 "compiled": 0}
    assert autocast_findings(analyzed_here(run)) == []


LIGHTNING = """
import sys, tempfile
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import lightning as L

class MLP(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, 10))

    def training_step(self, batch, _index):
        x, y = batch
        out = self.net(x)
        if _index == 0:
            print(f"forward dtype {out.dtype}")
        return nn.functional.cross_entropy(out, y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

torch.manual_seed(0)
loader = DataLoader(TensorDataset(torch.randn(32 * 12, 64), torch.randint(0, 10, (32 * 12,))),
                    batch_size=32)
with tempfile.TemporaryDirectory() as out:
    trainer = L.Trainer(max_steps=12, accelerator="cpu", devices=1, precision="bf16-mixed",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=out)
    trainer.fit(MLP(), loader)
print("trained")
"""


@pytest.mark.slow
def test_lightning_bf16_mixed_gets_lightnings_switch_and_the_knob_turns_it_off(tmp_path):
    script = str(write(tmp_path / "lit.py", LIGHTNING))
    # GIVEN a Lightning Trainer(precision="bf16-mixed") on a small MLP
    run = tmp_path / "lit"
    res = dsprof("run", "--no-analyze", "-o", str(run), *SCHEDULE, script)
    assert res.code == 0, res.stderr
    assert "forward dtype torch.bfloat16" in res.stdout
    # THEN the finding opens with Lightning's own switch
    (f,) = autocast_findings(analyzed_here(run))
    assert f["fix"].startswith('# Lightning: Trainer(..., precision="32-true")')
    # AND DS_AUTOCAST=off disables the autocast Lightning enters around each training step
    off = tmp_path / "lit_off"
    res = dsprof("run", "--no-analyze", "-o", str(off), *SCHEDULE, script,
                 env={"DS_AUTOCAST": "off"}, timed=False)
    assert res.code == 0, res.stderr
    assert "forward dtype torch.float32" in res.stdout
    assert meta(off)["knobs"]["DS_AUTOCAST"]["disabled"] >= 12


HF_TRAINER = """
import sys, tempfile
import torch
sys.path.insert(0, {models!r})
import transformers as tf
from hf_trainer import BATCH, RandomTokens, build_model

torch.manual_seed(0)
model = build_model()
seen = []
model.transformer.h[0].mlp.c_fc.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
with tempfile.TemporaryDirectory() as out:
    args = tf.TrainingArguments(output_dir=out, max_steps=8, per_device_train_batch_size=BATCH,
                                learning_rate=1e-4, report_to=[], save_strategy="no",
                                logging_strategy="no", use_cpu=True, disable_tqdm=True,
                                dataloader_num_workers=0, seed=0, bf16=True)
    tf.Trainer(model=model, args=args, train_dataset=RandomTokens(BATCH * 8)).train()
print(f"forward dtype {{seen[-1]}}")
"""


@pytest.mark.slow
def test_hf_trainer_bf16_gets_the_trainers_switch_and_the_knob_turns_it_off(tmp_path):
    script = str(write(tmp_path / "hf.py", HF_TRAINER.format(
        models=str(REPO / "tests" / "corpus" / "models"))))
    # GIVEN the corpus's tiny GPT-2 under the HF Trainer with bf16=True on CPU
    run = tmp_path / "hf"
    res = dsprof("run", "--no-analyze", "-o", str(run), *SCHEDULE, script)
    assert res.code == 0, res.stderr
    assert "forward dtype torch.bfloat16" in res.stdout
    # THEN the fix opens with the Trainer's own switch, and no Lightning line
    (f,) = autocast_findings(analyzed_here(run))
    assert f["fix"].startswith("# Hugging Face Trainer: TrainingArguments(..., bf16=False)")
    assert "Lightning" not in f["fix"]
    # AND DS_AUTOCAST=off disables the autocast the Trainer (through accelerate) enters
    res = dsprof("run", "--no-analyze", "-o", str(tmp_path / "hf_off"), *SCHEDULE, script,
                 env={"DS_AUTOCAST": "off"}, timed=False)
    assert res.code == 0, res.stderr
    assert "forward dtype torch.float32" in res.stdout


COMPILED = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                      nn.Linear(256, 10))
compiled = torch.compile(model)
opt = torch.optim.SGD(model.parameters(), lr=1e-2)
x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
for _ in range(24):
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(x)
    nn.functional.cross_entropy(out.float(), y).backward()
    opt.step()
print("done")
"""


def test_autocast_around_a_compiled_model_is_found_though_its_casts_are_in_the_graph(tmp_path):
    # GIVEN autocast around a torch.compile'd MLP: inductor casts the fp32 weights inside its
    # kernels, so no aten::_to_copy of a weight is recorded (it was read as "the model itself
    # runs in low precision, not under autocast"; on an AVX2 EPYC the step took 10.3 ms under
    # autocast and 1.2 in fp32)
    run, found = profile(tmp_path, "compiled", str(write(tmp_path / "compiled.py", COMPILED)))
    assert not any(s["analyzer"] == "cpu_autocast" and "not under autocast" in s["reason"]
                   for s in found["skipped"])
    if meta(run)["precision"]["cpu_bf16"] != "none":
        return  # with bf16 in hardware, found or "bf16 pays here": either is a claim about it
    # THEN emulated (CI's CPU): the finding, its casts said to be inside the graph
    (f,) = autocast_findings(found)
    assert f["data"]["compiled_cast_ops_per_step"] == 3  # the three Linears' forward addmm
    assert "casts run inside the compiled graph" in f["explanation"]
    assert f["apply"] == {"DS_AUTOCAST": "off"}


BF16_MODEL = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(),
                      nn.Linear(512, 10)).to(torch.bfloat16)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(64, 256, dtype=torch.bfloat16), torch.randint(0, 10, (64,))
for _ in range(16):
    loss = nn.functional.cross_entropy(model(x).float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("done")
"""


def test_a_model_built_in_bf16_where_bf16_is_emulated_is_told_to_train_in_fp32(tmp_path):
    # GIVEN an MLP built in bf16 (no autocast): on an AVX2 EPYC 35.6-38.3 ms a step, 5.0 ms in
    # fp32, and dsprof's top finding was the fused AdamW's 0.89 ms
    run, found = profile(tmp_path, "bf16_model", str(write(tmp_path / "bf16.py", BF16_MODEL)))
    if meta(run)["precision"]["cpu_bf16"] != "none":
        # bf16 in hardware: what a bf16 model is for; no autocast to turn off either
        assert autocast_findings(found) == [] and "not under autocast" in reason(found)
        return
    # THEN where bf16 is emulated (CI's CPU): the model's dtype is the first finding
    (f,) = autocast_findings(found)
    assert found["findings"][0]["id"] == f["id"], [x["title"] for x in found["findings"]]
    assert f["title"].startswith("Train in fp32: bf16 is emulated on this CPU")
    assert "model = model.float()" in f["fix"] and not f.get("apply")
    params = 2 * (256 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10)  # bf16 bytes
    assert f["data"]["parameter_bytes"] == params


INSIDE_COMPILED = """
import torch
import torch._dynamo.utils
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=1e-2)
x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))


@torch.compile
def forward(x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x)


for _ in range(12):
    opt.zero_grad()
    out = forward(x)
    nn.functional.cross_entropy(out.float(), y).backward()
    opt.step()
stats = torch._dynamo.utils.counters
print("forward dtype", out.dtype, dict(stats["stats"]), dict(stats["graph_break"]))
"""


def test_ds_autocast_off_reaches_an_autocast_inside_compiled_code(tmp_path):
    # GIVEN autocast entered inside a torch.compile'd function: Dynamo never runs autocast's
    # __init__ there, and the knob's bare wrapper made it fail ("KeyError: dtype")
    script = write(tmp_path / "inside.py", INSIDE_COMPILED)
    # (the script's output and Dynamo's counts are judged, no time: beside other tests)
    plain = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "plain"), *SCHEDULE,
                   str(script), timed=False)
    off = dsprof("run", "-q", "--no-analyze", "-o", str(tmp_path / "off"), *SCHEDULE, str(script),
                 env={"DS_AUTOCAST": "off"}, timed=False)
    # THEN both run; the compiled region runs in fp32 with the knob, bf16 without
    assert plain.code == 0 and off.code == 0, off.stderr[-2000:]
    assert "forward dtype torch.bfloat16" in plain.stdout
    assert "forward dtype torch.float32" in off.stdout
    # AND Dynamo compiled the same graphs, with no graph break the knob caused
    assert plain.stdout.split("torch.bfloat16")[1] == off.stdout.split("torch.float32")[1]
    assert meta(tmp_path / "off")["knobs"]["DS_AUTOCAST"]["compiled"] >= 1
