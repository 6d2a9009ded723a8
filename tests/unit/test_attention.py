"""Attention recognised by dataflow in real torch.profiler traces of hand-written forms (3-D
and 4-D, matmul / bmm / einsum, div or mul scale, masked_fill or additive mask, dropout), and
not reported as hand-written where the model calls scaled_dot_product_attention."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from dsprof.analyzers.attention import AttentionAnalyzer
from dsprof.analyzers.fusion import UNATTRIBUTED
from dsprof.analyzers.registry import Analyzer, analyze
from dsprof.findings import Finding
from dsprof.ingest.importer import import_traces
from dsprof.run import load

D, HEADS, T, B = 32, 4, 64, 8


class Attention(nn.Module):
    def __init__(self, form: str):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.form = form
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.form == "3d_matmul_div":  # the held-out model of the issue
            return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), dim=-1) @ v
        if self.form == "3d_einsum_mul":
            w = torch.einsum("btd,bsd->bts", q, k) * (D ** -0.5)
            return torch.einsum("bts,bsd->btd", w.softmax(-1), v)
        if self.form == "3d_bmm_additive_mask":
            w = torch.bmm(q, k.transpose(1, 2)).div(math.sqrt(D))
            w = w + torch.triu(torch.full((T, T), -1e9), diagonal=1)
            return torch.bmm(nn.functional.softmax(w, -1), v)
        heads = [t.view(B, T, HEADS, D // HEADS).transpose(1, 2) for t in (q, k, v)]
        q, k, v = heads
        if self.form == "4d_masked_fill_dropout":
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D // HEADS))
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            att = self.drop(torch.softmax(att.masked_fill(~mask, float("-inf")), dim=-1))
            y = att @ v
        else:  # "4d_sdpa"
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(B, T, D)


def _analyze(form: str, tmp_path: Path):
    torch.manual_seed(0)
    model = nn.Sequential(Attention(form), nn.Linear(D, D))
    x = torch.randn(B, T, D)
    trace = tmp_path / f"{form}.json"
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model(x).sum().backward()
    prof.export_chrome_trace(str(trace))
    run_dir, _ = import_traces([trace], tmp_path / "run")
    with load(run_dir.path) as run:
        return analyze(run, only=("attention", "fusion"), write=False).findings


@pytest.mark.parametrize(("form", "chain"), [
    ("3d_matmul_div", ["matmul", "div", "softmax", "matmul"]),
    ("3d_einsum_mul", ["einsum", "mul", "softmax", "einsum"]),
    ("3d_bmm_additive_mask", ["bmm", "div", "add", "softmax", "bmm"]),
    ("4d_masked_fill_dropout", ["matmul", "mul", "masked_fill", "softmax", "dropout", "matmul"]),
])
def test_hand_written_attention_is_found_in_every_form(form, chain, tmp_path):
    # GIVEN a model whose attention is written out by hand in one form
    # WHEN its trace is analyzed
    found = _analyze(form, tmp_path)
    # THEN the attention is named once, with SDPA to paste: with the op chain the dataflow
    # followed, or, where the fusion analyzer priced its scale/mask/softmax chain, by that
    # priced finding alone (one thing, one finding)
    (f,) = [f for f in found if f.kind in ("fusion.hand_attention", "fusion.attention")]
    assert "scaled_dot_product_attention" in f.fix
    if f.kind == "fusion.hand_attention":
        assert f.data["ops"] == chain
        assert f.data["scores"][-2:] == [T, T]
        assert f.saving_s == 0
    else:
        assert "softmax" in f.data["ops"] and f.saving_s > 0
        assert f.title.startswith("Use F.scaled_dot_product_attention")
    assert not [f for f in found if f.kind == "attention.sdpa"]
    # AND a fusion chain holding its softmax, if priced, is named attention (never a generic
    # pointwise chain, whatever op came before it)
    assert not [f for f in found if f.kind == "fusion.pointwise_chain"
                and "softmax" in f.data.get("ops", [])]


def test_attention_on_sdpa_is_not_hand_written(tmp_path):
    found = _analyze("4d_sdpa", tmp_path)
    assert not [f for f in found if f.kind == "fusion.hand_attention"]
    (f,) = [f for f in found if f.kind == "attention.sdpa"]
    assert "already uses scaled_dot_product_attention" in f.title



def test_a_ppo_loss_with_a_softmax_after_a_linear_is_not_attention(tmp_path):
    # GIVEN a PPO update in the order reinforcement-learning libraries write it: a Categorical
    # policy over a Linear's logits, its log-prob, the value head (a Linear), then the
    # policy's entropy (a softmax), the advantages normalised and the clipped probability
    # ratio: consecutive ops on one batch length, which shapes link into one chain
    from dsprof.analyzers.fusion import classify
    from dsprof.analyzers.registry import Context
    from dsprof.metrics.ops.fusion_chains import find_chains

    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
    action, value = nn.Linear(64, 2), nn.Linear(64, 1)
    obs, actions = torch.randn(64, 8), torch.randint(0, 2, (64,))
    old_log_prob, advantages, returns = torch.randn(64), torch.randn(64), torch.randn(64)
    trace = tmp_path / "ppo.json"
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        features = body(obs)
        dist = torch.distributions.Categorical(logits=action(features))
        log_prob = dist.log_prob(actions)
        values = value(features).flatten()
        entropy = dist.entropy()
        adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        ratio = torch.exp(log_prob - old_log_prob)
        policy_loss = -torch.min(adv * ratio, adv * torch.clamp(ratio, 0.8, 1.2)).mean()
        value_loss = nn.functional.mse_loss(returns, values)
        (policy_loss + 0.5 * value_loss - 0.01 * entropy.mean()).backward()
    prof.export_chrome_trace(str(trace))
    run_dir, _ = import_traces([trace], tmp_path / "run")
    # WHEN the fusion analyzer's chains of its forward are found and named
    with load(run_dir.path) as run:
        table = Context(run).op_table
        chains = [c for seq in table.sequences for c in find_chains(seq, None)]
        (loss,) = [c for c in chains if "softmax" in c.names]
        # THEN the chain follows the value head's Linear and holds the softmax ...
        assert loss.before.name == "aten::linear" and len(loss.names) >= 10
        # ... and is a chain of pointwise ops: not attention (its probabilities go on to
        # more pointwise math, not to a matmul), no norm, no softmax by hand
        assert classify(loss, device=False) == "fusion.pointwise_chain"
        # AND the analyzers name no attention in it
        found = analyze(run, only=("attention", "fusion"), write=False).findings
    assert not [f.title for f in found if "attention" in f.kind]


class _PricedAttention(Analyzer):
    """The fusion analyzer's priced attention finding for the unattributed chain, as it comes
    before the attention analyzer in the registry."""

    name = "fusion"

    def run(self, ctx):
        return [Finding(analyzer=self.name, kind="fusion.attention",
                        key=f"{UNATTRIBUTED}:mul,softmax", title="priced", saving_s=1e-3,
                        confidence="medium", explanation="priced", fix="sdpa")]


def test_attention_the_fusion_analyzer_priced_is_not_named_again(tmp_path):
    # GIVEN a hand-written attention the attention analyzer names on its own
    kinds = [f.kind for f in _analyze("3d_matmul_div", tmp_path)]
    assert "fusion.hand_attention" in kinds
    # WHEN the fusion analyzer ran before it and priced the chain of the same module
    with load(tmp_path / "run") as run:
        found = analyze(run, analyzers=[_PricedAttention(), AttentionAnalyzer()],
                        write=False).findings
    # THEN that finding is the only one: the module is not named twice
    assert [f.kind for f in found] == ["fusion.attention"]
