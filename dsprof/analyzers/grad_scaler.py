"""GradScaler trouble: optimizer steps skipped again and again, or a collapsing loss scale.

Example:
    fp16 training where the scaler skipped 9 of 40 steps after it had settled, and the scale
    fell from 65536 to 0.5.

Pattern:
    ``steps.loss_scale`` / ``steps.skipped`` (collectors/grad_scaler.py fills them with no code
    change). A few skips while the scale calibrates at the start are normal (the default
    initial scale is 2**16 and halves per overflow): only skips after the scale settled count,
    or more than ``CALIBRATION_SKIPS`` before it.

    The calibration is as long as the initial scale needs: halving from ``init_scale`` takes
    log2 of it (Megatron-LM starts at 2**32: 14 skips here before it held at 2**18).

    The scale has settled at the first good step that starts ``SETTLED_RUN`` good steps in a
    row, not at the first good step: that one may come before the weights moved. An MLP
    trained by SGD at lr 0.7 took step 0 at 65536, then its updated weights overflowed steps 1
    and 2 (65536 -> 32768 -> 16384) and never again in 200 steps; it read as "skipped 2 of
    200 ... Repeated overflow means some values exceed float16's range", fixed by bf16. 8
    good steps are 8 updates the scale survived, and fewer than a growth probe's interval
    in the tests (10: each run of good steps ends at a probe). A run that never has 8 good
    steps in a row never settled: its skips count from its first good step, as before.

Algorithm:
    Per rank: skips after the scale settled, the longest run of consecutive skips, and the
    scale's fall from its highest value after the calibration (the first good step on; from
    before it, Megatron's 2**32 settling at 2**18 read as a collapse by 2**13). A skipped step
    does all of forward and backward for nothing, so the saving is (skipped steps / steps) x
    the median step time. The scale "collapses" when it ends below 1 or ``COLLAPSE_FACTOR``
    below that high: gradients then overflow even unscaled, which no scale fixes.

    A skip right after the scale grew is the scaler's growth probe (it doubles the scale after
    ``growth_interval`` good steps, and backs off when that overflows): not values out of
    float16's range. When every late skip is one, the finding is the probes' cost, and its fix
    a longer ``growth_interval`` (2000 by default; 10 made one step in ten a skip).
"""

from __future__ import annotations

import math

from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding

CALIBRATION_SKIPS = 16  # 2**16 -> 1: the default init_scale halving to 1
SETTLED_RUN = 8  # good steps in a row that say the scale has settled (module docstring)
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
        settled_at = _settled(steps, first_good)
        late = [s for s in steps[settled_at:] if s[2]]
        early = sum(1 for s in steps[:settled_at] if s[2])
        longest = run = 0
        for s in steps:
            run = run + 1 if s[2] else 0
            longest = max(longest, run)
        scales = [float(s[1]) for s in steps]
        # the scale the run started from (a first skip halved it) and the skips halving it
        # to a working scale may take (2**16 -> 1: 16)
        initial = scales[0] * 2 if steps[0][2] else scales[0]
        calibration = max(CALIBRATION_SKIPS, math.ceil(math.log2(max(initial, 2.0))))
        settled = scales[first_good:] or scales
        high, last = max(settled), scales[-1]
        high_step = steps[scales.index(high, first_good if first_good < n else 0)][0]
        findings = []
        total_skipped = sum(1 for s in steps if s[2])
        uncalibrated = early > calibration
        repeated = len(late) >= REPEATED_SKIPS or uncalibrated
        # a late skip back to a scale a good step held before: the scaler's growth probe
        # backing off (the first late skip may be its ceiling, found once)
        held: set[float] = set()
        probes = []
        for i, s in enumerate(steps[settled_at:], settled_at):
            if s[2] and scales[i] in held:
                probes.append(s)
            elif not s[2]:
                held.add(scales[i])
        if repeated and not uncalibrated and len(late) >= REPEATED_SKIPS \
                and all(s in probes for s in late[1:]):
            findings.append(self._probes(ctx, rank, steps, late))
        elif repeated:
            wasted = [s for s in steps if s[2]] if uncalibrated else late
            share = len(wasted) / n
            step_s = ctx.step_s or 0.0
            findings.append(Finding(
                analyzer=self.name, kind="amp.skipped_steps", key=f"rank{rank}",
                title=f"GradScaler skipped {len(wasted)} of {n} optimizer steps on rank {rank}",
                saving_s=share * step_s, confidence="medium",
                explanation=f"{total_skipped} steps had inf/NaN gradients and were thrown away "
                            f"({len(late)} after the scale had settled; longest run "
                            f"{longest}). Each did forward and backward for nothing: "
                            f"{share:.1%} of the steps, about {share * step_s * 1e3:.3g} ms "
                            f"{ctx.per_step} on average. Repeated overflow means some values "
                            "exceed float16's range.",
                evidence=_skips(rank, wasted),
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

    def _probes(self, ctx: Context, rank: int, steps: list[tuple],
                probes: list[tuple]) -> Finding:
        """Every late skip but the first (the ceiling, found once) took the scale back to a
        level good steps held: the probes' cost, and a longer ``growth_interval``."""
        n = len(steps)
        at = [int(s[0]) for s in probes]
        every = round((at[-1] - at[0]) / (len(at) - 1)) if len(at) > 1 else None
        share = len(probes) / n
        step_s = ctx.step_s or 0.0
        return Finding(
            analyzer=self.name, kind="amp.skipped_steps", key=f"rank{rank}",
            title=(f"GradScaler's growth probes skipped {len(probes)} of {n} optimizer steps on "
                   f"rank {rank}: each time it grew the scale, a step overflowed at it"),
            saving_s=share * step_s, confidence="medium",
            explanation=("After growth_interval good steps in a row the scaler doubles its "
                         "scale; each time, the steps' gradients soon overflowed at it and one "
                         "was skipped, the scale halved back"
                         + (f" (one every {every} steps here" if every else " (steps ")
                         + (": steps " if every else "")
                         + 
                         f"{', '.join(map(str, at[:8]))}{' ...' if len(at) > 8 else ''}). "
                         "That is the scaler finding its ceiling, not values out of float16's "
                         f"range, but each probe throws a step away: {share:.1%} of the steps, "
                         f"about {share * step_s * 1e3:.3g} ms {ctx.per_step}. The default "
                         "growth_interval, 2000, makes it one step in 2000."),
            evidence=_skips(rank, probes),
            fix=("scaler = torch.amp.GradScaler(..., growth_interval=2000)  # the default; "
                 + (f"a probe came every {every} steps here" if every else "probes were rare")),
            verify=("paste the fix, run again: dsprof summary NEW_RUN shows the skips"),
            data={"rank": rank, "skipped_steps": at, "probes": True,
                  "scale": [[int(s[0]), float(s[1])] for s in steps]})


def _settled(steps: list[tuple], first_good: int) -> int:
    """The index of the first good step that starts ``SETTLED_RUN`` good steps in a row;
    ``first_good`` where no run is that long."""
    run = 0
    for i, s in enumerate(steps):
        run = 0 if s[2] else run + 1
        if run == SETTLED_RUN:
            return i - SETTLED_RUN + 1
    return first_good


def _skips(rank: int, skipped: list[tuple]) -> tuple[Evidence, ...]:
    return tuple(Evidence(f"step {s[0]} skipped, loss scale then {float(s[1]):g}",
                          rank=rank, step=int(s[0]), start_ns=s[3], end_ns=s[4],
                          value=float(s[1])) for s in skipped[:10])

