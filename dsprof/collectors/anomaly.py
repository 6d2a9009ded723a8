"""The first NaN/Inf: which op made it, where, and from what.

Used by the dispatch watcher (``dsprof run --detect-anomaly``, and ``DS_LOG_LEVEL=DEBUG``)
on every op's floating outputs. The check is one float32 (or float64) sum per output and one
host read of it: a sum is finite exactly when the tensor has no NaN/Inf, unless the finite
values overflow it, which ``isfinite().all()`` then rules out. A NaN always stops the run; an
Inf only when the op made it from finite inputs (an overflow, a division by zero), so an
intentional ``-inf`` attention mask and what carries it along pass. View ops are not checked (they
alias an output that was). ``torch.autograd.detect_anomaly`` instead checks only backward
outputs and records a Python stack for every forward op; benchmarks/debug_overhead.py compares
the two.

On the first hit the record goes to ``raw/rank<R>/anomaly.json`` (ingested into the
``anomalies`` table, turned into a finding by ``analyzers/anomaly.py``), is logged, and
:class:`~dsprof.errors.NumericalAnomalyError` is raised into the script to stop it there.
"""

from __future__ import annotations

import linecache
import math
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import torch
from torch.utils._pytree import tree_flatten

from dsprof.frames import shown_path
from dsprof.rundir import ANOMALY_FILE, atomic_write_bytes

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_DSPROF_DIR = str(Path(__file__).resolve().parents[1]) + os.sep
_SKIP_DTYPES = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                             "float8_e5m2fnuz", "float8_e8m0fnu")
                if hasattr(torch, n)}


def _checkable(t: Any) -> bool:
    return (type(t) is torch.Tensor and t.dtype.is_floating_point and t.dtype not in _SKIP_DTYPES
            and t.layout == torch.strided and not t.is_meta and t.numel() > 0)


def _finite(t: torch.Tensor) -> bool:
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    if math.isfinite(float(t.sum(dtype=acc))):
        return True
    return bool(torch.isfinite(t).all())  # the sum may only have overflowed


def _inputs_finite(args: Any, kwargs: Any) -> bool:
    for a in tree_flatten((args, kwargs))[0]:
        if isinstance(a, float) and not math.isfinite(a):
            return False
        if _checkable(a) and not _finite(a):
            return False
    return True


def first_nonfinite(out: Any, args: Any, kwargs: Any) -> tuple[int, torch.Tensor] | None:
    """(output index, tensor) of the first floating output the op made non-finite, else None.

    A NaN always counts. An Inf counts only when every input was finite: ``-inf`` written on
    purpose (an attention mask, ``masked_fill(m, float("-inf"))``) and Infs carried along from
    such an input are not errors, while an overflow or a division by zero is.
    """
    inputs_finite: bool | None = None
    for i, t in enumerate(tree_flatten(out)[0]):
        if not _checkable(t) or _finite(t):
            continue
        if bool(torch.isnan(t).any()):
            return i, t
        if inputs_finite is None:
            inputs_finite = _inputs_finite(args, kwargs)
        if inputs_finite:
            return i, t
    return None


def tensor_stats(t: torch.Tensor) -> dict[str, Any]:
    """Shape, dtype, NaN/Inf counts and min/max/mean of the finite values."""
    out: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                           "device": str(t.device), "numel": t.numel()}
    if t.numel() == 0 or t.is_meta or t.layout != torch.strided or t.dtype == torch.bool:
        return out
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.dtype.is_floating_point:
        t = t.detach().to(torch.float64)
        out["nan"] = int(torch.isnan(t).sum())
        out["inf"] = int(torch.isinf(t).sum())
        t = t[torch.isfinite(t)]
    else:
        t = t.detach().to(torch.float64)
    if t.numel():
        out.update(min=float(t.min()), max=float(t.max()), mean=float(t.mean()),
                   abs_max=float(t.abs().max()))
    return out


def user_frames(limit: int = 4) -> list[dict[str, Any]]:
    """The innermost frames of the calling stack outside torch and dsprof: the script's lines
    that led to the op (in backward, the ``.backward()`` call)."""
    frames = []
    f = sys._getframe(1)
    while f is not None and len(frames) < limit:
        name = f.f_code.co_filename
        if not name.startswith((_TORCH_DIR, _DSPROF_DIR, "<frozen")):
            frames.append({"file": shown_path(name), "line": f.f_lineno, "function": f.f_code.co_name,
                           "code": linecache.getline(name, f.f_lineno).strip()})
        f = f.f_back
    return frames


def build_record(func: Any, args: Any, kwargs: Any, index: int, bad: torch.Tensor, *,
                 rank: int, step: int, ts_ns: int, module: str, phase: str) -> dict[str, Any]:
    node = torch._C._current_autograd_node() if phase == "backward" else None
    stats = tensor_stats(bad)
    nan, inf = stats.get("nan", 0), stats.get("inf", 0)
    inputs, scalars = [], []
    for i, a in enumerate(tree_flatten((args, kwargs))[0]):
        if isinstance(a, torch.Tensor):
            inputs.append({"index": i, **tensor_stats(a)})
        elif isinstance(a, (int, float, bool)):
            scalars.append({"index": i, "value": a if math.isfinite(float(a)) else str(a)})
    frames = user_frames()
    site = f"{frames[0]['file']}:{frames[0]['line']}" if frames else None
    return {
        "rank": rank, "step": step, "ts_ns": ts_ns, "op": str(func), "module": module or None,
        "phase": phase, "autograd_node": node.name() if node is not None else None,
        "site": site, "frames": frames,
        "kind": "nan+inf" if nan and inf else ("nan" if nan else "inf"),
        "output_index": index, "output": stats, "inputs": inputs, "scalars": scalars,
    }


def write_record(raw_dir: Path, record: dict[str, Any]) -> Path:
    path = raw_dir / ANOMALY_FILE
    atomic_write_bytes(path, orjson.dumps(record, option=orjson.OPT_INDENT_2))
    return path


def describe(record: dict[str, Any]) -> str:
    """The record as the few lines printed when the run stops."""
    out = record["output"]
    what = {"nan": "NaN", "inf": "Inf", "nan+inf": "NaN and Inf"}[record["kind"]]
    where = f"module {record['module']}" if record["module"] else "no module"
    node = f", autograd node {record['autograd_node']}" if record["autograd_node"] else ""
    head = (f"first {what} in step {record['step']}: output {record['output_index']} of "
            f"{record['op']} ({record['phase']}, {where}{node})")
    lines = [head]
    for fr in record["frames"][:1]:
        lines.append(f"  at {fr['file']}:{fr['line']} in {fr['function']}: {fr['code']}")
    lines.append(f"  output: {_fmt_stats(out)}")
    for inp in record["inputs"]:
        lines.append(f"  input {inp['index']}: {_fmt_stats(inp)}")
    for s in record["scalars"]:
        lines.append(f"  input {s['index']}: {s['value']!r}")
    return "\n".join(lines)


def _fmt_stats(s: dict[str, Any]) -> str:
    text = f"{s['dtype']}{s['shape']} on {s['device']}"
    if "nan" in s:
        text += f", {s['nan']} NaN, {s['inf']} Inf of {s['numel']}"
    if "min" in s:
        text += f"; finite min {s['min']:.4g} max {s['max']:.4g} mean {s['mean']:.4g}"
    return text
