"""Small causal Transformer language model, written from scratch, trained on random tokens.

A GPT-style decoder: token + learned position embeddings, N pre-LayerNorm blocks (causal
self-attention, then a GELU MLP), a final LayerNorm and an LM head tied to the token embedding.
It trains with AdamW and next-token cross-entropy on random token ids, so the loss only falls
towards log(vocab); the point is the op mix, not the model.

Attention is hand-written on purpose: q/k/v Linear, q @ k^T * scale, masked_fill with a causal
mask, softmax, @ v, output projection. That unfused pattern is a target for later dsprof
analyzers; `--sdpa` swaps in torch.nn.functional.scaled_dot_product_attention(is_causal=True)
so the two can be compared. The GELU MLP (Linear -> GELU -> Linear) is another fusion target.

No profiler code lives here; the script is a plain training loop and runs unmodified.
It runs on the CPU unless `--device cuda` is given; on a machine without a GPU that stops with
one line (exit status 2).
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from _device import pick_device
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, max_seq: int, use_sdpa: bool) -> None:
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.use_sdpa = use_sdpa
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.proj = nn.Linear(d_model, d_model)
        mask = torch.tril(torch.ones(max_seq, max_seq, dtype=torch.bool))
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        # (b, t, c) -> (b, heads, t, head_dim)
        q = self.q(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
            att = att.masked_fill(~self.causal_mask[:t, :t], float("-inf"))
            att = torch.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, max_seq: int, use_sdpa: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, max_seq, use_sdpa)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerLM(nn.Module):
    def __init__(self, vocab: int, d_model: int, n_heads: int, n_layers: int, max_seq: int,
                 use_sdpa: bool = False, checkpoint: bool = False) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.tok_emb = nn.Embedding(vocab, d_model)
        self.pos_emb = nn.Embedding(max_seq, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, max_seq, use_sdpa) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.tok_emb.weight  # tied LM head
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2 style init. With nn.Embedding's default N(0, 1) the tied head produces huge
        # logits, softmax underflows into float32 denormals and backward matmuls slow ~100x.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        pos = torch.arange(t, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            if self.checkpoint and self.training:
                # keep only each block's input; recompute its inside during backward
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(self.ln_f(x))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=40, help="optimizer steps to run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--sdpa", action="store_true",
                   help="use F.scaled_dot_product_attention instead of hand-written attention")
    p.add_argument("--checkpoint", action="store_true",
                   help="activation checkpointing of every block (torch.utils.checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda[:N]; cuda without a GPU stops with one line")
    return p.parse_args()



def main() -> None:
    args = parse_args()
    dev = pick_device(args.device, "transformer_lm.py")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = TransformerLM(args.vocab, args.d_model, args.heads, args.layers, args.seq_len,
                          use_sdpa=args.sdpa, checkpoint=args.checkpoint).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)

    model.train()
    loss = torch.tensor(float("nan"))
    start = time.perf_counter()
    for _ in range(args.steps):
        # Random tokens; targets are the inputs shifted left by one position.
        tokens = torch.randint(0, args.vocab, (args.batch_size, args.seq_len + 1), device=dev)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]

        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, args.vocab), targets.reshape(-1))
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start

    ms_per_step = 1000.0 * elapsed / max(args.steps, 1)
    attn = "sdpa" if args.sdpa else "manual"
    print(f"done: {args.steps} steps, final loss {loss.item():.4f}, {ms_per_step:.1f} ms/step "
          f"({attn} attention)")


if __name__ == "__main__":
    main()
