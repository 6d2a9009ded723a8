"""The notes an analysis gives about the whole run, beside its findings: timing withheld (a
disturbed run), the script's own profiler, missing steps, a partial set of ranks, and the
run's measured step-time noise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsprof.findings_file import Analysis

if TYPE_CHECKING:
    from dsprof.analyzers.registry import Context

DISTURBANCE = {
    "debug_trace": "the run was recorded with DS_LOG_LEVEL=DEBUG, which logs every op and "
                   "slows each one by a different amount",
    "anomaly_check": "the run was recorded with --detect-anomaly, which checks every op's "
                     "outputs for NaN/Inf and slows each one by a different amount",
    "autograd_anomaly": "the script turned on torch.autograd.set_detect_anomaly(True), which "
                        "records a Python stack for every forward op and checks every "
                        "backward output, slowing each op by a different amount",
}


def run_notes(ctx: Context, out: Analysis) -> None:
    """The notes that apply to the whole run: withheld timing, and its measured noise."""
    if ctx.disturbance:
        out.notes.insert(0, {"kind": "withheld", "text": (
            f"Timing findings are withheld: {DISTURBANCE[ctx.disturbance]}. Run again "
            "without it to rank them.")})
    handed = ctx.meta.get("user_profiler")
    if isinstance(handed, dict) and handed.get("sessions"):
        out.notes.append({"kind": "user_profiler", "text": _user_profiler_note(ctx, handed)})
    if ctx.steps_missing:
        out.notes.append({"kind": "incomplete", "text": (
            f"Per-step findings are not made: {ctx.steps_missing}. Savings are per capture "
            "(the profiled ops), and no step time or noise band is known.")})
    world = int(ctx.run.manifest.world_size or 0)
    if world > 1 and ctx.run.has("steps"):
        held = int(ctx.run.sql("SELECT count(DISTINCT rank) FROM steps")[0][0] or 0)
        if 0 < held < world:
            out.notes.append({"kind": "ranks", "text": (
                f"The run holds {held} of the job's {world} ranks: cross-rank findings "
                "(stragglers) are not made, and the others describe these ranks only.")})
    noise = ctx.noise
    if noise is not None:
        out.noise = noise.to_json()
        out.notes.append({"kind": "noise", "text": (
            f"Step-time noise: {noise.sd_s * 1e3:.3g} ms ({noise.rel:.1%}) over {noise.n} "
            f"steady steps; savings under {noise.band_s() * 1e3:.3g} ms a step are not "
            "ranked.")})


def _user_profiler_note(ctx: Context, handed: dict[str, Any]) -> str:
    """The script ran torch.profiler itself: where dsprof stepped aside, and what it kept."""
    spans = ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in handed.get("steps") or [])
    where = f" over steps {spans}" if spans else f" from step {handed.get('first_step')}"
    windows = [w for w in ctx.meta.get("windows") or [] if w.get("kind") == "window"]
    kept = ("dsprof's op timeline recorded no step of its own, so no op-level finding is "
            "made" if not windows else
            "the op-level findings come from dsprof's window at steps "
            + ", ".join(str(s) for w in windows for s in w.get("steps") or []))
    return (f"The script ran its own torch.profiler ({handed['sessions']} session(s)){where}: "
            "two profiler sessions cannot run at once, so dsprof's op timeline stepped aside "
            f"then, and those steps are left out of step times (they pay for the script's "
            f"profiling); {kept}.")
