"""Scripts that only run inference, or that train with evaluation forwards around the training:
the steps dsprof finds in them must be the outermost forwards in the first case, and exactly the
optimizer's in the second. Each prints one ``FACTS {json}`` line with what it really did."""

from tests.integration.step_scripts import MLP

# N forwards of an eval-mode model under inference_mode (MODE=inference) or no_grad; with
# EXIT_AT=k the script prints its facts and exits with status 3 before forward k
INFERENCE = MLP + '''
import sys
model.eval()
n, stop = int(os.environ.get("N", "40")), int(os.environ.get("EXIT_AT", "-1"))
ctx = torch.inference_mode if os.environ.get("MODE", "inference") == "inference" else torch.no_grad
total = 0.0
with ctx():
    for i in range(n):
        if i == stop:
            print("FACTS " + json.dumps({"forwards": i, "sum": total}))
            sys.exit(3)
        total += float(model(x).sum())
print("FACTS " + json.dumps({"forwards": n, "sum": total}))
'''

# training with SGD, EVAL_FIRST evaluation forwards before it (under the 16 that decide) and
# EVAL_EVERY-step evaluations of EVAL_N forwards between its steps; SWITCH=1 lets the
# evaluation forwards run in train mode without no_grad (a sloppy script: still no steps)
TRAIN_WITH_EVAL = MLP + '''
opt = torch.optim.SGD(model.parameters(), lr=0.01)
steps = int(os.environ.get("STEPS", "12"))
eval_first, eval_every, eval_n = (int(os.environ.get(k, d)) for k, d in
                                  (("EVAL_FIRST", "5"), ("EVAL_EVERY", "3"), ("EVAL_N", "4")))
grad_eval = os.environ.get("GRAD_EVAL") == "1"
evals = 0

def evaluate(n):
    global evals
    model.eval()
    with (torch.enable_grad() if grad_eval else torch.no_grad()):
        for _ in range(n):
            model(x)
            evals += 1
    model.train()

evaluate(eval_first)
for i in range(steps):
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if (i + 1) % eval_every == 0:
        evaluate(eval_n)
print("FACTS " + json.dumps({"optimizer_steps": steps, "eval_forwards": evals}))
'''

# INFER forwards under inference_mode, then STEPS training steps (a run that starts by
# inferring and later trains), its optimizer built before the inference (OPT_FIRST=1: a
# training script, as PPO's rollouts come before its updates) or only after it
INFER_THEN_TRAIN = MLP + '''
opt_first = os.environ.get("OPT_FIRST") == "1"
if opt_first:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
infer, steps = int(os.environ.get("INFER", "20")), int(os.environ.get("STEPS", "10"))
with torch.inference_mode():
    for _ in range(infer):
        model(x)
if not opt_first:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(steps):
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("FACTS " + json.dumps({"inference_forwards": infer, "optimizer_steps": steps}))
'''

# a compiled model's inference loop (aot_eager: Dynamo's graphs without C++ compiling)
COMPILED_INFERENCE = '''
import json, os, warnings
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 8)).eval()
compiled = torch.compile(model, backend="aot_eager")
n = int(os.environ.get("N", "30"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with torch.inference_mode():
        for _ in range(n):
            out = compiled(torch.randn(16, 32))
from torch._dynamo.utils import counters
print("FACTS " + json.dumps({
    "forwards": n,
    "graph_breaks": sum(counters["graph_break"].values()),
    "unique_graphs": counters["stats"]["unique_graphs"],
    "frames": counters["frames"]["total"],
    "recompiles": sum(counters["recompiles"].values()),
    "warnings": [str(w.message)[:120] for w in caught]}))
'''

# HF generate() on a tiny random GPT-2 (built from a config: nothing is downloaded): CALLS
# generate() calls of TOKENS new tokens each, greedy, so every call makes exactly TOKENS
# forwards of the model
GENERATE = '''
import json, os
import torch
from transformers import GPT2Config, GPT2LMHeadModel

torch.manual_seed(0)
cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=97, n_positions=64)
model = GPT2LMHeadModel(cfg).eval()
calls, tokens = int(os.environ.get("CALLS", "4")), int(os.environ.get("TOKENS", "10"))
prompt = torch.randint(0, 97, (2, 8))
for _ in range(calls):
    out = model.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                         pad_token_id=0)
print("FACTS " + json.dumps({"generate_calls": calls, "new_tokens": tokens,
                             "out_len": out.shape[1]}))
'''

# Lightning, evaluation only: trainer.predict then trainer.validate over BATCHES batches each,
# the LightningModule's own forward called by predict_step and validation_step (it also has
# configure_optimizers, which neither calls)
LIGHTNING_EVAL = '''
import json, os
import torch
import lightning as L
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    def forward(self, x):
        return self.net(x)
    def predict_step(self, batch, batch_idx):
        return self(batch[0])
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

torch.manual_seed(0)
n = int(os.environ.get("BATCHES", "20"))
ds = TensorDataset(torch.randn(n * 16, 32), torch.randint(0, 4, (n * 16,)))
trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                    enable_checkpointing=False, enable_model_summary=False)
model = Net()
out = trainer.predict(model, DataLoader(ds, batch_size=16))
trainer.validate(model, DataLoader(ds, batch_size=16), verbose=False)
print("FACTS " + json.dumps({"predict_batches": len(out), "validate_batches": n}))
'''

# N slow forwards (SLEEP seconds each, inside the module): a capture cap under the loop's length
# cuts the whole-run capture before the forwards are known to be the steps
SLOW_INFERENCE = '''
import json, os, time
import torch
from torch import nn

class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 64)
    def forward(self, x):
        time.sleep(float(os.environ.get("SLEEP", "0.2")))
        return self.lin(x)

model, n = Slow().eval(), int(os.environ.get("N", "12"))
with torch.no_grad():
    for _ in range(n):
        model(torch.randn(8, 64))
print("FACTS " + json.dumps({"forwards": n}))
'''
