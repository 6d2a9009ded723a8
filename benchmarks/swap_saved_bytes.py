"""What each hand-written chain and its library op save for backward, in bytes: the facts behind
``dsprof/metrics/memory/library_swap.py`` (what a library-op swap frees at the peak).

    OMP_NUM_THREADS=1 python benchmarks/swap_saved_bytes.py [--rows 2048] [--width 256]

For one (rows, width) input that requires grad, in float32 and bfloat16, each form runs once
under ``torch.autograd.graph.saved_tensors_hooks``; per form it prints whether its input is
among the saved tensors, the bytes of the distinct storages it created and saved (parameters
left out), of which its output, and their shapes and dtypes. Nothing is asserted: the figures
are this torch's (2.13 when written: see the module docstring of library_swap.py).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def saved(fn: Callable[..., torch.Tensor], x: torch.Tensor,
          *params: torch.Tensor) -> tuple[int, int, int, list[str]]:
    seen: dict[int, tuple[int, tuple[int, ...], torch.dtype]] = {}
    kept: list[torch.Tensor] = []  # held so that no address is reused during the call

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = (st.nbytes(), tuple(t.shape), t.dtype)
        kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x, *params)
    x_ptr = x.untyped_storage().data_ptr()
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    inside = {p: v for p, v in seen.items() if p != x_ptr and p not in param_ptrs}
    out_ptr = y.untyped_storage().data_ptr()
    return (seen.get(x_ptr, (0,))[0], sum(b for b, _, _ in inside.values()),
            sum(b for p, (b, _, _) in inside.items() if p == out_ptr),
            [f"{list(s)} {str(d).removeprefix('torch.')}" for _, s, d in inside.values()])


def forms(width: int) -> list[tuple[str, Callable[..., torch.Tensor], int]]:
    """(name, function of (x, *params), number of params: weight[, bias])."""

    def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                           * (x + 0.044715 * torch.pow(x, 3))))

    def gelu_erf(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))

    def softmax_max(x: torch.Tensor) -> torch.Tensor:
        e = (x - x.amax(-1, keepdim=True)).exp()
        return e / e.sum(-1, keepdim=True)

    def softmax_exp(x: torch.Tensor) -> torch.Tensor:
        e = x.exp()
        return e / e.sum(-1, keepdim=True)

    def ln_pow(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        xc = x - x.mean(-1, keepdim=True)
        return xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + 1e-5) * w + b

    def ln_var(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        var = x.var(-1, keepdim=True, unbiased=False)
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-5) * w + b

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # examples/fusion_mlp.py
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def rms_t5(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # T5LayerNorm, LlamaRMSNorm
        h = x * torch.rsqrt(x.to(torch.float32).pow(2).mean(-1, keepdim=True) + 1e-6)
        return w * h.to(x.dtype)

    return [("hand tanh GELU", gelu_tanh, 0),
            ('F.gelu(approximate="tanh")', lambda x: F.gelu(x, approximate="tanh"), 0),
            ("hand erf GELU", gelu_erf, 0), ("F.gelu", F.gelu, 0),
            ("hand softmax, max-sub", softmax_max, 0), ("hand softmax, x.exp()", softmax_exp, 0),
            ("torch.softmax", lambda x: torch.softmax(x, -1), 0),
            ("hand LayerNorm, xc.pow", ln_pow, 2), ("hand LayerNorm, x.var", ln_var, 2),
            ("F.layer_norm", lambda x, w, b: F.layer_norm(x, (width,), w, b, 1e-5), 2),
            ("hand RMSNorm", rms, 1), ("hand RMSNorm, T5 form", rms_t5, 1),
            ("F.rms_norm", lambda x, w: F.rms_norm(x, (width,), w, 1e-6), 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--width", type=int, default=256)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, input ({args.rows}, {args.width})")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(args.rows, args.width, dtype=dtype, requires_grad=True)
        params = [torch.ones(args.width, dtype=dtype, requires_grad=True),
                  torch.zeros(args.width, dtype=dtype, requires_grad=True)]
        print(f"--- {str(dtype).removeprefix('torch.')}: x = {x.numel() * x.element_size()} "
              f"bytes, a float32 per row = {args.rows * 4} bytes")
        print(f"{'form':28} {'input kept':>10} {'created+saved':>13} {'of it output':>12}")
        for name, fn, n_params in forms(args.width):
            inp, inside, out, shapes = saved(fn, x, *params[:n_params])
            print(f"{name:28} {inp:>10} {inside:>13} {out:>12}  {', '.join(shapes)}")


if __name__ == "__main__":
    main()
