"""The first NaN/Inf of a run, as a finding.

Example:
    ``dsprof run --detect-anomaly train.py`` stopped in step 12 at ``aten.div.Tensor`` in
    ``Net.head`` (forward), train.py:42, whose second input was all zeros.

Pattern:
    a row in ``anomalies`` (one per rank that stopped; collectors/anomaly.py writes it).

Algorithm:
    Read the row. If an input already held NaN/Inf, the op only passed it on: the fix is
    upstream (data, or an op before the first checked one). Otherwise the op made it, and the
    usual cause for that op (division by zero, log/sqrt of a non-positive value, exp or a
    half-precision cast overflowing) is named from the input statistics.
"""

from __future__ import annotations

from typing import Any

import orjson

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding

_FIXES = {
    "div": "guard the denominator, e.g. `x / y.clamp_min(1e-12)` (or `y + eps`)",
    "log": "clamp the argument, e.g. `torch.log(x.clamp_min(1e-12))`, or use `log_softmax` / "
           "`logsumexp` instead of log(softmax(...))",
    "sqrt": "clamp the argument, e.g. `torch.sqrt(x.clamp_min(0) + 1e-12)`",
    "rsqrt": "add an epsilon, e.g. `torch.rsqrt(x + 1e-6)`",
    "pow": "check the base and exponent range (a negative base with a fractional exponent "
           "gives NaN)",
    "exp": "subtract the maximum first (`x - x.amax(dim, keepdim=True)`) or use `softmax` / "
           "`logsumexp`",
    "_to_copy": "the value does not fit the target dtype (float16 tops out at 65504): use "
                "bfloat16 autocast or scale down before the cast",
}


class Anomalies(Analyzer):
    name = "anomaly"
    requires = ("anomalies",)

    def run(self, ctx: Context) -> list[Finding]:
        rows = ctx.run.sql("""
            SELECT rank, step, ts_ns, op, module, phase, autograd_node, site, code, kind,
                   output_index, shape, dtype, numel, nan_count, inf_count, inputs
            FROM anomalies ORDER BY ts_ns, rank""")
        return [self._finding(ctx, *r) for r in rows]

    def _finding(self, ctx: Context, rank: int, step: int, ts_ns: int, op: str,
                 module: str | None, phase: str, node: str | None, site: str | None,
                 code: str | None, kind: str, out_index: int, shape: str, dtype: str,
                 numel: int, nan: int, inf: int, inputs: str) -> Finding:
        what = {"nan": "NaN", "inf": "Inf", "nan+inf": "NaN and Inf"}[kind]
        ins: list[dict[str, Any]] = orjson.loads(inputs or "[]")
        bad_in = [i for i in ins if i.get("nan") or i.get("inf")]
        short = op.split(".")[1] if "." in op else op
        where = f"{module} ({phase})" if module else phase
        evidence = [Evidence(f"output {out_index} of {op}: {dtype}{shape}, {nan} NaN, {inf} "
                             f"Inf of {numel}", rank=rank, step=step, start_ns=ts_ns,
                             end_ns=ts_ns, module=module, site=site)]
        for i in ins:
            if "dtype" not in i:
                evidence.append(Evidence(f"input {i['index']}: scalar {i.get('value')!r}",
                                         rank=rank, step=step))
                continue
            stats = (f", finite min {i['min']:.4g} max {i['max']:.4g} mean {i['mean']:.4g}"
                     if "min" in i else "")
            evidence.append(Evidence(
                f"input {i['index']}: {i['dtype']}{i['shape']}, {i.get('nan', 0)} NaN, "
                f"{i.get('inf', 0)} Inf{stats}", rank=rank, step=step))
        if bad_in:
            cause = (f"input {bad_in[0]['index']} already held NaN/Inf, so {short} only passed "
                     "it on: it came from outside the checked ops (the batch, a loaded "
                     "tensor, or a value set in place). Check the data for this step.")
            fix = "assert torch.isfinite(batch).all()  # where the batch is loaded"
        else:
            cause = f"{short} made it from finite inputs."
            fix = _FIXES.get(short.rstrip("_"), "check this op's input range (stats in the "
                                                "evidence) and the line that calls it")
        line = f" at {site}" + (f" (`{code}`)" if code else "") if site else ""
        node_text = f", autograd node {node}" if node else ""
        verify = "dsprof run --detect-anomaly " + (ctx.target_command or "SCRIPT")
        return Finding(
            analyzer=self.name, kind="numerics.nonfinite",
            key=f"{op}|{module or ''}|{phase}|{site or ''}",
            title=f"First {what} in step {step}: {op} in {where}{line}",
            confidence="high",
            explanation=f"rank {rank}, step {step}: the {phase} op {op}{node_text} produced "
                        f"{nan} NaN and {inf} Inf values among {numel}. {cause} The run "
                        "stopped there.",
            evidence=tuple(evidence), fix=fix, verify=verify,
            data={"rank": rank, "step": step, "op": op, "module": module, "phase": phase,
                  "site": site, "inputs": ins})
