"""Training loops whose steps dsprof must find without help: an optimizer closure (SGD, Adam,
LBFGS), a hand-written update with no optimizer, gradient accumulation, and a model under
torch.compile. Each prints one ``FACTS {json}`` line with what it really did, for the tests to
compare with what dsprof recorded."""

MLP = '''
import json, os
import torch
from torch import nn

class MLP(nn.Module):
    def __init__(self, d=64, depth=3):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Sequential(nn.Linear(d, d), nn.ReLU()) for _ in range(depth)])
        self.head = nn.Linear(d, 4)
    def forward(self, x):
        return self.head(self.layers(x))

def param_bytes(model):
    return sum(p.numel() * p.element_size() for p in model.parameters())

torch.manual_seed(0)
model = MLP()
x, y = torch.randn(128, 64), torch.randint(0, 4, (128,))
'''

CLOSURE = MLP + '''
kind = os.environ["OPT"]
steps = int(os.environ.get("STEPS", "10"))
if kind == "sgd":
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
elif kind == "adam":
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
else:
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3, history_size=3)
calls = 0

def closure():
    global calls
    calls += 1
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss

for _ in range(steps):
    loss = opt.step(closure)
print("FACTS " + json.dumps({"optimizer_steps": steps, "closure_calls": calls,
                             "loss": float(loss)}))
'''

MANUAL_UPDATE = MLP + '''
steps = int(os.environ.get("STEPS", "70"))
for _ in range(steps):
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.01 * p.grad
            p.grad = None
print("FACTS " + json.dumps({"backward_calls": steps}))
'''

# a torch.func training loop (functional_call + grad, a hand-written update), with a loss
# module called each iteration: two outermost module calls, one torch.autograd.grad
FUNC_GRAD = MLP + '''
from torch.func import functional_call, grad
steps = int(os.environ.get("STEPS", "70"))
criterion = nn.CrossEntropyLoss()
params = {k: v.detach() for k, v in model.named_parameters()}
def loss_fn(p, x, y):
    return criterion(functional_call(model, p, (x,)), y)
for _ in range(steps):
    g = grad(loss_fn)(params, x, y)
    params = {k: params[k] - 0.01 * g[k] for k in params}
print("FACTS " + json.dumps({"grad_calls": steps, "loss": round(loss_fn(params, x, y).item(), 6)}))
'''

ACCUMULATION = MLP + '''
steps = int(os.environ.get("STEPS", "10"))
accum = int(os.environ["ACCUM"])
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
micro = x.shape[0] // 4  # the same micro-batch whatever the accumulation
for _ in range(steps):
    for k in range(accum):
        xb, yb = x[:micro], y[:micro]
        loss = nn.functional.cross_entropy(model(xb), yb) / accum
        loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
print("FACTS " + json.dumps({"optimizer_steps": steps, "backward_calls": steps * accum,
                             "param_bytes": param_bytes(model)}))
'''

COMPILED = '''
import json, os, warnings
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)
    def forward(self, x):
        return x + self.out(torch.relu(self.fc(self.ln(x))))

torch.manual_seed(0)
model = nn.Sequential(Block(32), Block(32), nn.Linear(32, 1))
compiled = torch.compile(model)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
steps = int(os.environ.get("STEPS", "12"))
x, y = torch.randn(16, 32), torch.randn(16, 1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(steps):
        loss = nn.functional.mse_loss(compiled(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
from torch._dynamo.utils import counters
print("FACTS " + json.dumps({
    "optimizer_steps": steps,
    "graph_breaks": sum(counters["graph_break"].values()),
    "unique_graphs": counters["stats"]["unique_graphs"],
    "frames": counters["frames"]["total"],
    "recompiles": sum(counters["recompiles"].values()),
    "warnings": [str(w.message)[:120] for w in caught]}))
'''

COMPILED_STEP = '''
import json, os
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)

# aot_eager: Dynamo's graphs and breaks as with Inductor, without seconds of C++ compiling
@torch.compile(backend=os.environ.get("BACKEND", "aot_eager"))
def train_step(x, y):  # the whole step compiled: graph breaks at backward() and .item()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()

steps = int(os.environ.get("STEPS", "10"))
for _ in range(steps):
    train_step(torch.randn(8, 16), torch.randn(8, 1))
from torch._dynamo.utils import counters
print("FACTS " + json.dumps({
    "optimizer_steps": steps,
    "graph_breaks": sum(counters["graph_break"].values()),
    "unique_graphs": counters["stats"]["unique_graphs"],
    "recompiles": sum(counters["recompiles"].values())}))
'''
