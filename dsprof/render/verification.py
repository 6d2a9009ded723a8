"""Terminal rendering of a :class:`Verification` (``dsprof verify``). Presents only.

Said in words and per-step numbers a person reads ("predicted -5.30 ms/step, measured
-4.90 ms/step (95 % interval -5.40 to -4.40 ms/step, 3 paired rounds): within 25 %,
confirmed"), never as a ratio of ratios (``-2143%``). The verdict is the paired rounds' and in
the words of benchmarks/advice.py's judge (one function, ``reports.paired_verdict``); with one
round there is no interval of the change between runs, and the output says so instead of
giving a verdict. Each arm's spread and the step band stay beside it.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dsprof.render.safe_text import esc
from dsprof.reports.paired_verdict import Judgement
from dsprof.reports.verification import Verification
from dsprof.units import fmt_mib, fmt_s_as_ms


def _signed_ms(s: float) -> str:
    return f"{s * 1e3:+.2f} ms/step"


def _signed_mib(b: int) -> str:
    return f"{b / 2**20:+.1f} MiB"


def _metric(j: Judgement) -> str:
    if j.metric == "update":
        return "the training thread's CPU time inside optimizer.step(), the update the fix changes"
    if j.metric != "cpu":
        return "wall time"
    return "the training thread's CPU time" + (
        "; the prediction as the same share of it" if j.scaled else "")


def _interval(j: Judgement) -> str:
    """The 95 % interval of the change of the step time (negative: faster)."""
    lo, hi = j.interval_s  # of the saving
    return f"{-hi * 1e3:+.2f} to {-lo * 1e3:+.2f} ms/step"


def verdict(v: Verification) -> str | None:
    """One sentence: predicted and measured change of the step time, and the paired rounds'
    verdict (the judge's words, ``reports.paired_verdict``); with one round, that there is
    none to give."""
    if v.baseline_step_s is None or v.measured_step_s is None:
        return None
    j = v.judgement
    if j is None or not j.paired:
        measured = v.measured_step_s - v.baseline_step_s  # negative: faster
        said = f"measured {_signed_ms(measured)}"
        if v.predicted_step_s is not None:
            said = f"predicted {_signed_ms(v.predicted_step_s - v.baseline_step_s)}, " + said
        why = "one round: " if j is not None else ""
        return f"{said} ({why}no interval, so no verdict)"
    said = (f"predicted {_signed_ms(-j.predicted_saving_s)}, measured "
            f"{_signed_ms(-j.measured_saving_s)} (95 % interval {_interval(j)}, "
            f"{j.rounds} paired rounds)")
    words = j.verdict.removesuffix(", SLOWER")
    if j.holds_zero and words == "inside the noise":
        words = "inside the noise, no measurable change"
    elif j.holds_zero:
        words += "; no measurable change"
    if j.slower:
        words += "; the fix made the step slower"
    return f"{said}: {words}"


def verdict_reason(j: Judgement) -> str:
    """What the verdict's words mean, for the line under it."""
    whole = j.whole_step
    if whole is not None and -whole[0] > whole[1]:
        return (f"the whole step's CPU time grew by {-whole[0] * 1e3:.2f} ms (band "
                f"{whole[1] * 1e3:.2f}): more than the update saved")
    if j.slower:
        return "the whole interval is slower than the baseline"
    if j.holds_zero:
        return "the interval holds 0: the rounds cannot tell this change from none"
    if j.verdict.startswith("within 25 %, confirmed"):
        return "the whole interval lies within 25 % of the prediction"
    if j.verdict.startswith("within 25 % (interval wider)"):
        return ("the mean change is within 25 % of the prediction, its interval wider: "
                "not confirmed; more rounds narrow it")
    if j.verdict.startswith("OFF"):
        return "more than 25 % from the prediction, which lies outside the interval"
    return ("more than 25 % from the prediction, but the interval still holds it: "
            "more rounds could tell")


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
        j = v.judgement
        if j is not None and j.paired:
            console.print(f"  {verdict_reason(j)}", style="dim")
            console.print(f"  change per round: baseline k's median - fix k's ({_metric(j)}); "
                          "interval: their mean's, Student's t", style="dim")
            if j.whole_step is not None:
                saved, band_whole = j.whole_step
                console.print(f"  the whole step's CPU time: {_signed_ms(-saved)} (±"
                              f"{band_whole * 1e3:.2f} ms), the rest of the step's drift in it",
                              style="dim")
        else:
            console.print("  a run's median step moves with the machine's load from run to "
                          "run: --rounds 2 or more pairs baseline and fix runs for a 95 % "
                          "interval and a verdict", style="dim")
        band = v.band_s
        if band is not None:
            console.print(f"  step noise band ±{band * 1e3:.2f} ms: the arms' step-to-step "
                          "spread alone", style="dim")
        console.print(f"  medians of {v.steps_used[0]} + {v.steps_used[1]} full-speed steps "
                      "(compile and profiled steps left out)", style="dim")
    if v.baseline_peak is not None and v.measured_peak is not None:
        mem = f"measured {_signed_mib(v.measured_peak - v.baseline_peak)}"
        if v.predicted_peak is not None:
            mem = f"predicted {_signed_mib(v.predicted_peak - v.baseline_peak)}, " + mem
        console.print(f"peak memory: {mem}")
    console.print(f"rerun: {esc(v.applied)}", soft_wrap=True)
