"""Terminal rendering of a :class:`Verification` (``dsprof verify``). Presents only.

Said in words and per-step numbers a person reads ("predicted -5.30 ms/step, measured
+2.10 ms/step: the fix made it slower"), never as a ratio of ratios (``-2143%``), and with the
noise band: the smallest change these two arms' spread can tell from none.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dsprof.render.safe_text import esc
from dsprof.reports.verification import Verification
from dsprof.units import fmt_mib, fmt_s_as_ms


def _signed_ms(s: float) -> str:
    return f"{s * 1e3:+.2f} ms/step"


def _signed_mib(b: int) -> str:
    return f"{b / 2**20:+.1f} MiB"


def verdict(v: Verification) -> str | None:
    """One sentence: predicted and measured change of the step time, and what it means."""
    if v.baseline_step_s is None or v.measured_step_s is None:
        return None
    measured = v.measured_step_s - v.baseline_step_s  # negative: faster
    said = f"measured {_signed_ms(measured)}"
    if v.predicted_step_s is not None:
        said = f"predicted {_signed_ms(v.predicted_step_s - v.baseline_step_s)}, " + said
    band = v.band_s
    noise = ""  # the band is printed on the next line (render_verification)
    if v.measurable is False:
        return f"{said}: no measurable change (inside the noise band)"
    if measured > 0:
        return f"{said}: the fix made it slower{noise}"
    faster = f"{v.baseline_step_s / v.measured_step_s:.2f}x as fast" \
        if v.measured_step_s > 0 else "faster"
    if v.predicted_step_s is None or v.predicted_step_s >= v.baseline_step_s:
        return f"{said}: the fix made it faster, {faster}{noise}"
    predicted = v.baseline_step_s - v.predicted_step_s
    got = -measured / predicted
    how = ("about as predicted" if abs(got - 1) <= 0.2 or
           (band is not None and abs(-measured - predicted) <= band)
           else f"{got:.0%} of the predicted saving")
    return f"{said}: the fix made it faster, {faster}, {how}{noise}"


def render_verification(v: Verification, console: Console) -> None:
    for f in v.findings:
        console.print(f"[bold]{esc(f['id'])}[/] {esc(f['title'])}  (apply: "
                      + " ".join(f"{esc(k)}={esc(val)}" for k, val in f["apply"].items()) + ")")
    table = Table(box=None, pad_edge=False)
    for col in ("", "baseline", "predicted", "measured"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("step time (median)", fmt_s_as_ms(v.baseline_step_s),
                  fmt_s_as_ms(v.predicted_step_s), fmt_s_as_ms(v.measured_step_s))
    table.add_row("spread (robust sd)", fmt_s_as_ms(v.baseline_spread_s), "",
                  fmt_s_as_ms(v.measured_spread_s))
    table.add_row("peak memory", fmt_mib(v.baseline_peak), fmt_mib(v.predicted_peak),
                  fmt_mib(v.measured_peak))
    console.print(table)
    for line in v.not_applied:
        console.print(f"not applied: {esc(line)}: this rerun measures less than the fix",
                      style="yellow", soft_wrap=True)
    said = verdict(v)
    if said is not None:
        console.print(said, style="bold red" if "slower" in said else "bold")
        band = v.band_s
        if band is not None:
            console.print(f"  noise band ±{band * 1e3:.2f} ms: a smaller change cannot be told "
                          "from noise", style="dim")
        console.print(f"  medians of {v.steps_used[0]} + {v.steps_used[1]} full-speed steps "
                      "(compile and profiled steps left out)", style="dim")
    if v.baseline_peak is not None and v.measured_peak is not None:
        mem = f"measured {_signed_mib(v.measured_peak - v.baseline_peak)}"
        if v.predicted_peak is not None:
            mem = f"predicted {_signed_mib(v.predicted_peak - v.baseline_peak)}, " + mem
        console.print(f"peak memory: {mem}")
    console.print(f"rerun: {esc(v.applied)}", soft_wrap=True)
    console.print("[dim]a busy machine moves medians: --rounds N alternates fresh baseline and "
                  "fixed runs[/]")
