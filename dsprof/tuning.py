"""``dsprof tune batch-size``: predict the largest batch from one run, prove it with one or two.

1. The baseline: a run of the script as given (or ``--baseline RUN``), analyzed; its
   ``batch_size`` finding advises batch B1 with a predicted peak and samples/s.
2. Probe 1: the script again with ``DS_BATCH_SIZE=B1`` (the finding's ``apply``), so its
   DataLoader makes the batch with no change to the script; its peak and samples/s are measured.
3. Probe 2, only when probe 1 went over the budget or left more than ``ROOM`` of it unused:
   probe 1's own analysis (its timeline was measured near the answer) gives B2, tried once;
   when it has none, a line through the two measured (batch, peak) points does.

Every run is a ``dsprof run`` in a child process (the same profiler windows; probes under the
same ``--memory-budget``), so a probe that runs out of memory ends its own process, never this
one.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsprof import interpreter_options
from dsprof.errors import ConfigError, DsprofError, RunDirError

ROOM = 0.05  # a probe peaking this far under the budget earns a second, larger probe
MAX_GROWTH = 4  # the second probe is at most this many times the first one's batch


@dataclass
class Measured:
    """One run of the script: its batch size, live-bytes peak and samples per second."""

    path: Path
    batch: int | None
    peak: int | None
    samples_s: float | None
    exit_status: int


@dataclass
class Probe:
    batch: int
    predicted_peak: int
    predicted_samples_s: float
    measured: Measured


@dataclass
class TuneResult:
    baseline: Measured
    budget: int
    finding_id: str
    probes: list[Probe] = field(default_factory=list)

    @property
    def advised(self) -> Probe | None:
        """The largest probed batch whose measured peak stayed within the budget."""
        ok = [p for p in self.probes if p.measured.peak is not None and
              p.measured.peak <= self.budget and p.measured.exit_status == 0]
        return max(ok, key=lambda p: p.batch) if ok else None

    def to_json(self) -> dict[str, Any]:
        def run(m: Measured) -> dict[str, Any]:
            return {"run": str(m.path), "batch": m.batch, "peak": m.peak,
                    "samples_s": m.samples_s, "exit_status": m.exit_status}
        best = self.advised
        return {"budget": self.budget, "finding": self.finding_id, "baseline": run(self.baseline),
                "probes": [{"batch": p.batch, "predicted_peak": p.predicted_peak,
                            "predicted_samples_s": p.predicted_samples_s, **run(p.measured)}
                           for p in self.probes],
                "advised_batch": best.batch if best else None}


def measure(path: Path, exit_status: int = 0) -> Measured:
    """Peak memory and samples/s (the batch over the median step time) of a finished run, by
    the rules of ``run.facts``."""
    from dsprof.run import load

    with load(path) as run:
        facts = run.facts
        peak, batch, samples_s = facts.peak_bytes, None, None
        if run.has("steps"):
            b = run.sql("SELECT mode(batch_size) FROM steps WHERE step > 0")[0][0]
            batch = int(b) if b else None
            if batch and facts.step.median_s:
                samples_s = batch / facts.step.median_s
    return Measured(path, batch, peak, samples_s, exit_status)


def dsprof_run(target: Sequence[str], output: Path, budget: int | None, env: dict[str, str],
               run_args: Sequence[str] = ()) -> Measured:
    """Run ``dsprof run`` on ``target`` in a child process and measure it."""
    # the probe's interpreter gets tune's own options (python -W error -m dsprof tune ...)
    cmd = [sys.executable, *interpreter_options.of_this_process(), "-m", "dsprof", "run", "-q",
           "-o", str(output), *run_args]
    if budget is not None:
        cmd += ["--memory-budget", str(budget)]
    child_env = {**os.environ, **env}
    # The script's own output goes to stderr: stdout carries the result (--json).
    proc = subprocess.run([*cmd, *target], env=child_env, check=False, stdout=subprocess.PIPE,
                          text=True)
    if proc.stdout:
        sys.stderr.write(proc.stdout)
    if not (output / "meta.json").is_file():
        raise RunDirError(f"dsprof run did not start ({' '.join(cmd)}): exit {proc.returncode}")
    try:
        return measure(output, proc.returncode)
    except DsprofError:
        return Measured(output, None, None, None, proc.returncode)


def window_args(path: Path) -> list[str]:
    """The baseline's profiler schedule as ``dsprof run`` flags: probes record the same steps,
    so their peaks compare."""
    from dsprof.manifest import load_manifest

    settings = load_manifest(path).settings
    return [arg for name in ("wait", "warmup", "active", "repeat") if name in settings
            for arg in (f"--{name}", str(settings[name]))]


def batch_advice(path: Path, budget: int | None) -> Any:
    """The batch-size finding of a run, analyzed against ``budget`` (None: the budget the run
    itself was made with, ``--memory-budget`` or the GPU's memory).

    Raises:
        ConfigError: the analyzer cannot advise (no budget, no memory tables, nothing to
            change).
    """
    from dsprof.analyzers.batch_size import BatchSize
    from dsprof.analyzers.registry import Context
    from dsprof.run import load

    analyzer = BatchSize()
    with load(path) as run:
        ctx = Context(run)
        if budget is not None:
            # The budget asked for now, not the one the run was made with.
            ctx.meta = {**run.meta, "settings": {**(run.meta.get("settings") or {}),
                                                 "memory_budget": budget}}
        missing = [t for t in analyzer.requires if not ctx.nonempty(t)]
        reason = (f"needs the {', '.join(missing)} tables" if missing
                  else analyzer.skip_reason(ctx))
        found = [] if reason else [f for f in analyzer.run(ctx) if f.kind == "batch.size"]
    if not found:
        raise ConfigError(f"{path}: no batch-size advice ("
                          f"{reason or 'the batch already is the largest that fits'})")
    return found[0]


def tune_batch_size(target: Sequence[str], out_dir: Path, baseline: Path | None,
                    budget: int | None, run_args: Sequence[str] = (), max_probes: int = 2,
                    echo: Callable[[str], None] = print) -> TuneResult:
    """Baseline (unless given), advice, then at most ``max_probes`` probe runs.

    Raises:
        ConfigError: no budget, no DataLoader to change, or no advice.
        RunDirError: a run could not be made or read.
    """
    if max_probes not in (1, 2):
        raise ConfigError("--probes must be 1 or 2")
    if baseline is None:
        echo(f"baseline: dsprof run {' '.join(target)}")
        # No budget enforced here: the batch the script asks for may be over it, and the
        # advice is exactly what to do then.
        base = dsprof_run(target, out_dir / "baseline", None, {}, run_args)
        if base.exit_status != 0:
            raise RunDirError(f"the baseline run failed (exit {base.exit_status}); see "
                              f"{base.path / 'dsprof.log'}")
    else:
        base = measure(baseline)
    run_args = [*run_args, *window_args(base.path)]
    finding = batch_advice(base.path, budget)
    data = finding.data
    # Probes run under --memory-budget when one was given (over it, dsprof stops the script as
    # an out-of-memory would); on a GPU the device itself is the limit.
    enforce = budget
    budget = int(data["budget"])
    if "DS_BATCH_SIZE" not in finding.apply:
        raise ConfigError("the script builds no DataLoader with a batch_size; change its batch "
                          f"by hand:\n{finding.fix}")
    result = TuneResult(base, budget, finding.id)
    batch = int(data["advised"])
    predicted_peak, predicted_sps = int(data["predicted_peak"]), float(data["predicted_samples_s"])
    for k in range(max_probes):
        echo(f"probe {k + 1}: batch {batch} (predicted peak {predicted_peak:,} bytes of "
             f"{budget:,})")
        env = {**finding.apply, "DS_BATCH_SIZE": str(batch)}
        got = dsprof_run(target, out_dir / f"probe-{k + 1}-b{batch}", enforce, env, run_args)
        result.probes.append(Probe(batch, predicted_peak, predicted_sps, got))
        if k + 1 == max_probes or _fits_closely(got, budget):
            break
        nxt = _next_probe(base, got, batch, budget)
        if nxt is None or nxt[0] == batch:
            break
        batch, predicted_peak, predicted_sps = nxt
    return result


def _fits_closely(got: Measured, budget: int) -> bool:
    return got.exit_status == 0 and got.peak is not None and \
        budget * (1 - ROOM) <= got.peak <= budget


def _next_probe(base: Measured, got: Measured, batch: int,
                budget: int) -> tuple[int, int, float] | None:
    """(batch, predicted peak, predicted samples/s) for the second probe: the advice of the
    analysis of probe 1 itself (a timeline measured at a batch close to the answer), at most
    ``MAX_GROWTH`` times its batch; else a line through the two measured peaks."""
    try:
        f = batch_advice(got.path, budget)
        nxt = min(int(f.data["advised"]), batch * MAX_GROWTH)
        return nxt, int(f.data["predicted_peak"]), float(f.data["predicted_samples_s"])
    except DsprofError:
        pass
    if got.peak is None or base.peak is None or not base.batch or batch == base.batch:
        return None
    slope = (got.peak - base.peak) / (batch - base.batch)
    if slope <= 0:
        return None
    nxt = min(max(1, batch + math.floor((budget - got.peak) / slope)), batch * MAX_GROWTH)
    return nxt, int(got.peak + (nxt - batch) * slope), _samples_s_at(base, got, nxt) or 0.0


def _samples_s_at(base: Measured, got: Measured, batch: int) -> float | None:
    """Samples/s at ``batch`` on the line through the two measured step times."""
    if not (base.samples_s and got.samples_s and base.batch and got.batch) or \
            base.batch == got.batch:
        return None
    t0, t1 = base.batch / base.samples_s, got.batch / got.samples_s
    step = t0 + (t1 - t0) * (batch - base.batch) / (got.batch - base.batch)
    return batch / step if step > 0 else None
