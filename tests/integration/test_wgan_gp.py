"""A WGAN-GP loop (gradient penalty through ``autograd.grad(create_graph=True)``, 5 critic
steps per generator step, two Adams) runs under ``dsprof run`` as without it, and its first
iteration's critic steps are not read as steady steps."""

from __future__ import annotations

from dsprof.run import load
from tests.integration.helpers import dsprof, runs_as_without_dsprof, write

WGAN_GP = """
import torch, torch.nn as nn

torch.manual_seed(0)
G = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 2))
D = nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.9))
opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.9))


def penalty(real, fake):
    eps = torch.rand(real.size(0), 1)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(D(mixed).sum(), mixed, create_graph=True)
    return ((g.norm(2, dim=1) - 1) ** 2).mean()


for it in range(14):
    for _ in range(5):
        real = torch.randn(64, 2) * 2
        fake = G(torch.randn(64, 16)).detach()
        loss_d = D(fake).mean() - D(real).mean() + 10 * penalty(real, fake)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
    loss_g = -D(G(torch.randn(64, 16))).mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    if it % 5 == 0:
        print(f"it {it} D {loss_d.item():.4f} G {loss_g.item():.4f}", flush=True)
print("done")
"""


def test_wgan_gp_runs_as_without_dsprof_and_its_split_first_iteration_is_not_steady(tmp_path):
    # GIVEN a WGAN-GP loop: the critic's Adam steps 5 times per generator step
    script = write(tmp_path / "wgan_gp.py", WGAN_GP)
    out = tmp_path / "run"
    # WHEN profiled
    # THEN the script's status and output are its own
    runs_as_without_dsprof(script, out)
    with load(out) as run:
        rows = run.sql("SELECT step, disturbed_by FROM steps ORDER BY step")
        # AND the first iteration, split at each critic step before the generator's optimizer
        # took the boundaries over, is left out of the steady steps (steps 2-4 were single
        # critic steps, 1.5 ms against 7.7 ms, counted as steady); the rest are iterations
        assert len(rows) == 4 + 14
        assert [r[1] for r in rows[2:6]] == ["split_iteration"] * 4
        steady = [r[0] for r in rows if r[1] is None]
        assert steady and min(steady) > 5
    # AND the fused-Adam advice counts the step() calls of each step, not 6 "optimizers"
    adv = dsprof("analyze", str(out))
    assert adv.code == 0, adv.stderr
    text = " ".join(adv.stdout.split())
    assert "Use Adam(..., fused=True)" in text
    assert "6 Adam.step calls each step" in text and "Adam optimizers step" not in text
