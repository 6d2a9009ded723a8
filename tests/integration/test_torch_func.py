"""Scripts built on torch.func (per-sample gradients for DP-SGD, functional meta-learning) run
under ``dsprof run`` as they run without it (collectors/saved_hooks_aside.py)."""

from __future__ import annotations

from dsprof.run import load
from tests.integration.helpers import runs_as_without_dsprof, write

# DP-SGD's core, as Opacus-style code writes it with torch.func: per-sample gradients by
# vmap(grad(...)), clipped per sample, averaged into a hand update; no optimizer, no backward()
PER_SAMPLE = """
import torch
from torch.func import functional_call, grad, vmap

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
params = {k: v.detach() for k, v in model.named_parameters()}


def loss_fn(p, x, y):
    out = functional_call(model, p, (x.unsqueeze(0),))
    return torch.nn.functional.cross_entropy(out, y.unsqueeze(0))


per_sample = vmap(grad(loss_fn), in_dims=(None, 0, 0))
for it in range(24):
    x, y = torch.randn(32, 20), torch.randint(0, 2, (32,))
    g = per_sample(params, x, y)
    norms = torch.stack([v.flatten(1).norm(dim=1) for v in g.values()]).norm(dim=0)
    clip = (1.0 / (norms + 1e-6)).clamp(max=1.0)
    with torch.no_grad():
        for k in params:
            params[k] = params[k] - 0.1 * (g[k] * clip.view(-1, *[1] * (g[k].dim() - 1))).mean(0)
    if it % 8 == 0:
        print(f"step {it}: mean per-sample norm {float(norms.mean()):.4f}", flush=True)
print("done")
"""


def test_per_sample_gradients_with_torch_func_run_as_without_dsprof(tmp_path):
    # GIVEN a per-sample-gradient loop that runs torch.func.grad in every iteration
    script = write(tmp_path / "dp_sgd.py", PER_SAMPLE)
    out = tmp_path / "run"
    # WHEN profiled (torch.func raised "don't yet support saved tensor hooks" in the window)
    # THEN the script's status and output are its own
    runs_as_without_dsprof(script, out)
    # AND the run holds its profiled window's ops, torch.func's among them
    with load(out) as run:
        assert run.sql("SELECT count(*) FROM ops WHERE name = 'aten::linear'")[0][0] > 0
