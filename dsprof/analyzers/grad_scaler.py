"""GradScaler trouble: optimizer steps skipped again and again, or a collapsing loss scale.

Example:
    fp16 training where the scaler skipped 9 of 40 steps after it had settled, and the scale
    fell from 65536 to 0.5.

Pattern:
    ``steps.loss_scale`` / ``steps.skipped`` (collectors/grad_scaler.py fills them with no code
    change). A few skips while the scale calibrates at the start are normal (the default
    initial scale is 2**16 and halves per overflow): only skips after the first successful
    step count, or a first run of more than ``CALIBRATION_SKIPS``.

Algorithm:
    Per rank: skips after the first good step, the longest run of consecutive skips, and the
    scale's fall from its highest value. A skipped step does all of forward and backward for
    nothing, so the saving is (skipped steps / steps) x the median step time. The scale
    "collapses" when it ends below 1 or ``COLLAPSE_FACTOR`` below its high: gradients then
    overflow even unscaled, which no scale fixes.
"""

from __future__ import annotations

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding

CALIBRATION_SKIPS = 16  # 2**16 -> 1: the default init_scale halving to 1
REPEATED_SKIPS = 2
COLLAPSE_FACTOR = 2.0**10


class LossScaling(Analyzer):
    name = "grad_scaler"
    requires = ("steps",)

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.run.sql("SELECT count(loss_scale) FROM steps")[0][0]:
            return "the run used no GradScaler (steps.loss_scale is empty)"
        return None

    def run(self, ctx: Context) -> list[Finding]:
        rows = ctx.run.sql("""
            SELECT rank, step, loss_scale, skipped, start_ns, end_ns FROM steps
            WHERE loss_scale IS NOT NULL ORDER BY rank, step""")
        by_rank: dict[int, list[tuple]] = {}
        for r in rows:
            by_rank.setdefault(int(r[0]), []).append(r[1:])
        out: list[Finding] = []
        for rank, steps in sorted(by_rank.items()):
            out.extend(self._rank(ctx, rank, steps))
        return out

    def _rank(self, ctx: Context, rank: int, steps: list[tuple]) -> list[Finding]:
        n = len(steps)
        first_good = next((i for i, s in enumerate(steps) if not s[2]), n)
        late = [s for s in steps[first_good:] if s[2]]
        longest = run = 0
        for s in steps:
            run = run + 1 if s[2] else 0
            longest = max(longest, run)
        scales = [float(s[1]) for s in steps]
        high, last = max(scales), scales[-1]
        high_step = steps[scales.index(high)][0]
        findings = []
        total_skipped = sum(1 for s in steps if s[2])
        repeated = len(late) >= REPEATED_SKIPS or first_good > CALIBRATION_SKIPS
        if repeated:
            wasted = [s for s in steps if s[2]] if first_good > CALIBRATION_SKIPS else late
            share = len(wasted) / n
            step_s = ctx.step_s or 0.0
            ev = tuple(Evidence(f"step {s[0]} skipped, loss scale then {float(s[1]):g}",
                                rank=rank, step=int(s[0]), start_ns=s[3], end_ns=s[4],
                                value=float(s[1])) for s in wasted[:10])
            findings.append(Finding(
                analyzer=self.name, kind="amp.skipped_steps", key=f"rank{rank}",
                title=f"GradScaler skipped {len(wasted)} of {n} optimizer steps on rank {rank}",
                saving_s=share * step_s, confidence="medium",
                explanation=f"{total_skipped} steps had inf/NaN gradients and were thrown away "
                            f"({len(late)} after the scale had settled; longest run "
                            f"{longest}). Each did forward and backward for nothing: "
                            f"{share:.1%} of the steps, about {share * step_s * 1e3:.1f} ms "
                            f"{ctx.per_step} on average. Repeated overflow means some values "
                            "exceed float16's range.",
                evidence=ev,
                fix="with torch.autocast(device_type, dtype=torch.bfloat16):  # bf16 has "
                    "float32's range; no GradScaler needed\n    loss = model(batch)",
                verify="dsprof run --detect-anomaly " + (ctx.target_command or "SCRIPT"),
                data={"rank": rank, "skipped_steps": [int(s[0]) for s in steps if s[2]],
                      "scale": [[int(s[0]), float(s[1])] for s in steps]}))
        if last < 1.0 or high / max(last, 1e-300) >= COLLAPSE_FACTOR:
            findings.append(Finding(
                analyzer=self.name, kind="amp.scale_collapse", key=f"rank{rank}",
                title=f"Loss scale collapsed from {high:g} to {last:g} on rank {rank}",
                confidence="high",
                explanation=f"The GradScaler's scale fell from {high:g} (step {high_step}) to "
                            f"{last:g} by step {steps[-1][0]}. It halves on every overflow; a "
                            "scale this low means gradients are inf/NaN even barely scaled, so "
                            "the model itself produces non-finite values (an overflowing "
                            "float16 op, a bad batch, a too-high learning rate).",
                evidence=(Evidence(f"loss scale {high:g} at step {high_step}", rank=rank,
                                   step=int(high_step), value=high),
                          Evidence(f"loss scale {last:g} at step {steps[-1][0]}", rank=rank,
                                   step=int(steps[-1][0]), value=last)),
                fix="# find the op that makes the first inf/NaN, then fix it or run it in "
                    "float32:\n# dsprof run --detect-anomaly train.py",
                verify="dsprof run --detect-anomaly " + (ctx.target_command or "SCRIPT"),
                data={"rank": rank, "scale": [[int(s[0]), float(s[1])] for s in steps]}))
        return findings
