"""The one explicit list of analyzers, and running them over a run.

An analyzer is a small class: a ``name``, the tables it ``requires`` (present and not empty),
an optional :meth:`Analyzer.skip_reason` for other preconditions, and :meth:`Analyzer.run`,
which reads tables through the :class:`Context` and returns findings. It never imports torch's
live hooks, so it runs the same on an imported cluster trace.

``analyze(run)`` runs every registered analyzer; one whose inputs are missing is skipped with a
reason, one that raises is recorded as failed (with the error) and the others still run. The
findings are rated against the run's step time and peak memory, judged against the run's
preconditions (:func:`_judge`: a run dsprof disturbed as a whole, a saving inside the step-time
noise, GPU-only advice on a CPU run), ranked by saving and written to ``findings.json``. Nothing here depends on wall-clock time or dict order, so the same run
gives the same file.
"""

from __future__ import annotations

import importlib
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any, ClassVar

import orjson

from dsprof.analyzers.claims import ClaimLedger, check_order, claimers_needed, record_claims
from dsprof.analyzers.run_notes import DISTURBANCE, run_notes
from dsprof.analyzers.step_words import StepWords
from dsprof.findings import FINDINGS_FILE, SAVING_CLOCK, THREAD_CPU, Finding, rank_key
from dsprof.findings_file import Analysis, read_findings_file
from dsprof.log import logger
from dsprof.metrics.noise import StepNoise, disturbance, profiled_on_cpu_share, step_noise
from dsprof.run import Run
from dsprof.rundir import atomic_write_bytes

# Analysis and the reading of findings.json live in dsprof.findings_file (no run layer), so that
# commands showing stored findings stay light; importers of this module keep finding them here
__all__ = ["ANALYZERS", "Analysis", "Analyzer", "Context", "analyze", "load_analyzer",
           "read_findings"]

# "module:Class" entries, imported when the analysis runs (an analyzer may import numpy or
# heavier code; listing names keeps ``import dsprof`` light). Add a line here to register an
# analyzer. Findings are ranked by saving, whatever the order; the order is the one in which
# claimed time is entered in the ledger (``claims.py``): every analyzer that claims a resource
# comes before those that read what is claimed of it (``check_order`` enforces it).
ANALYZERS: tuple[str, ...] = (
    "dsprof.analyzers.input_pipeline:InputPipeline",
    "dsprof.analyzers.step_outliers:StepOutliers",
    "dsprof.analyzers.host_syncs:HostSyncs",
    "dsprof.analyzers.pageable_readback:PageableReadbackAnalyzer",
    "dsprof.analyzers.checkpointing:Checkpointing",
    "dsprof.analyzers.batch_size:BatchSize",
    "dsprof.analyzers.tensor_cores:TensorCoreAnalyzer",
    "dsprof.analyzers.launch_bound:LaunchBoundAnalyzer",
    "dsprof.analyzers.gpu_idle:GpuIdleAnalyzer",
    "dsprof.analyzers.comm_overlap:CommOverlapAnalyzer",
    "dsprof.analyzers.comm_bound:CommBoundAnalyzer",
    "dsprof.analyzers.straggler:StragglerAnalyzer",
    "dsprof.analyzers.unbucketed_comms:UnbucketedAllReduceAnalyzer",
    "dsprof.analyzers.zero_broadcasts:ZeroBroadcastsAnalyzer",
    "dsprof.analyzers.data_parallel:DataParallelAnalyzer",
    "dsprof.analyzers.memory_leak:MemoryLeakAnalyzer",
    "dsprof.analyzers.fragmentation:FragmentationAnalyzer",
    "dsprof.analyzers.anomaly:Anomalies",
    "dsprof.analyzers.recompiles:Recompiles",
    "dsprof.analyzers.grad_scaler:LossScaling",
    "dsprof.analyzers.fusion:FusionAnalyzer",
    "dsprof.analyzers.attention:AttentionAnalyzer",
    "dsprof.analyzers.fusion_optimizer:OptimizerFusionAnalyzer",
    "dsprof.analyzers.precision:PrecisionAnalyzer",
    "dsprof.analyzers.cpu_autocast:CpuAutocastAnalyzer",
)


class Analyzer:
    """Base class. Subclasses set ``name`` and ``requires`` and implement :meth:`run`."""

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    # (resource, the finding kinds (prefixes) whose savings claim it): ``claims.py``
    claims: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = ()
    # resources whose claimed time this analyzer subtracts before pricing its own
    reads: ClassVar[tuple[str, ...]] = ()

    def skip_reason(self, ctx: Context) -> str | None:
        """Why this analyzer cannot run on this run (beyond missing tables), or None."""
        return None

    def run(self, ctx: Context) -> list[Finding]:
        raise NotImplementedError


class Context:
    """What analyzers share: the run, and facts several of them need, computed once."""

    def __init__(self, run: Run):
        self.run = run
        self.meta = run.meta
        self._nonempty: dict[str, bool] = {}
        self.claims = ClaimLedger()
        """Time the findings made so far claim (``claims.py``), filled by ``analyze``."""
        self.found: list[Finding] = []
        """The findings of the analyzers that ran before this one, filled by ``analyze``."""

    def nonempty(self, table: str) -> bool:
        # asked ~40 times per analysis; each query opens every Parquet part of the table
        if table not in self._nonempty:
            self._nonempty[table] = self.run.has(table) and bool(
                self.run.sql(f"SELECT EXISTS (SELECT 1 FROM {table})")[0][0])
        return self._nonempty[table]

    @cached_property
    def steps_missing(self) -> str | None:
        """Why nothing can be said per step in a ``dsprof run``'s directory that has no steps
        table (a run always writes one: the directory is incomplete or was edited), or None.
        Nothing read from a run directory is trusted: analyzers that count per step skip their
        per-step parts with this reason instead of failing on the missing table."""
        if not self.run.manifest.is_run or self.nonempty("steps"):
            return None
        return ("the run directory has no steps table (a dsprof run always writes one: the "
                "directory is incomplete); nothing can be counted per step")

    @cached_property
    def op_table(self) -> Any:
        """The run's :class:`~dsprof.metrics.ops.optable.OpTable`, built once for the
        analyzers that read it (fusion, fused optimizer, precision)."""
        from dsprof.metrics.ops.optable import OpTable

        return OpTable(self)

    @cached_property
    def step_s(self) -> float | None:
        """Mean step time in seconds over the steps that count (``run.facts``: full-speed
        steps of a ``dsprof run``), so a saving's share of it is its share of the training
        time."""
        return self.run.facts.step.mean_s

    @cached_property
    def step_cpu_s(self) -> float | None:
        """Mean CPU time of the stepping thread over the same steps (``run.facts``), or None:
        the step a saving priced in CPU time at a quiet pace is a share of (a loaded machine
        stretches the wall step, not that)."""
        return self.run.facts.step.cpu_mean_s

    @cached_property
    def step_fastest_s(self) -> float | None:
        """The shortest step of the counted loop past setup (``run.facts``), profiled or not:
        an upper bound on the step at a quiet machine's pace, which the mean and the thread's
        CPU time are not where the machine was loaded while the counted steps ran."""
        return self.run.facts.step.fastest_s

    @cached_property
    def words(self) -> StepWords:
        """How a figure of one step is worded (``step_words.py``): "per step", "a step", "of
        the step", ...; when the run marks no steps (no step time), the same phrases said of
        the capture: "in the trace" (an import) or "in the run" (analyzers then divide by
        one: the figure is the whole capture's, and ``data.saving_per`` is "capture")."""
        return StepWords.of(self.step_s is not None, self.run.manifest.is_run)

    @property
    def per_step(self) -> str:
        """ "per step", or "in the trace" / "in the run" on a run without steps (``words``)."""
        return self.words.per_step

    @cached_property
    def noise(self) -> StepNoise | None:
        """Step-time noise of rank 0's steady steps (``metrics.noise``), or None."""
        return step_noise(self.run, 0)

    @cached_property
    def disturbance(self) -> str | None:
        """``debug_trace`` / ``anomaly_check`` when dsprof slowed every step of the run."""
        return disturbance(self.run)

    @cached_property
    def on_gpu(self) -> bool:
        """The run used a GPU: a CUDA/ROCm device in meta.json, or kernels in the trace."""
        devices = (self.meta.get("devices") or {}).values()
        if any(isinstance(d, dict) and d.get("kind") in ("cuda", "rocm") for d in devices):
            return True
        return self.nonempty("kernels")

    @cached_property
    def sampled_ranks(self) -> frozenset[int]:
        """Ranks whose trace was down-sampled (``ingest_notes.sampled``): gaps between the
        events it kept are not idle time, so no idle or launch claim is made on them."""
        notes = self.meta.get("ingest_notes") or {}
        return frozenset(int(r) for r in (notes.get("sampled") or {}))

    @cached_property
    def profiled_steps(self) -> list[tuple[int, int]]:
        """(rank, step) of every profiled step, in order."""
        if not self.run.has("steps"):
            return []
        return [(int(r), int(s)) for r, s in self.run.sql(
            "SELECT rank, step FROM steps WHERE profiled ORDER BY rank, step")]

    @cached_property
    def peak_bytes(self) -> int | None:
        """The largest rank's peak memory (``run.facts``)."""
        return self.run.facts.peak_bytes

    @cached_property
    def target_command(self) -> str | None:
        """The command line that ran the script, for a verify command: each word shell-quoted
        and its braces doubled (a verify command is a template: ``_finish`` fills ``{run}``
        and ``{id}``, and an argument that says ``{run}`` stays what it says). None for
        imports."""
        target = self.run.manifest.target
        return None if target is None else template_text(target.command)

    @property
    def ranks_command(self) -> str | None:
        """The command that runs a multi-rank job again under dsprof, its ranks started as
        they were (``RunManifest.rerun_ranks``). None for imports."""
        command, ranks = self.target_command, self.run.manifest.rerun_ranks()
        if command is None:
            return None
        if ranks is None:
            return f"torchrun ... -m dsprof run {command}"
        return " ".join(["dsprof run", *ranks, command])


def load_analyzer(entry: str) -> Analyzer:
    module, _, cls = entry.partition(":")
    return getattr(importlib.import_module(module), cls)()


def analyze(run: Run, only: tuple[str, ...] = (), write: bool = True,
            analyzers: Sequence[Analyzer] | None = None) -> Analysis:
    """Run the registered analyzers (or those named in ``only``; or the given ``analyzers``
    instead of the registry) and write findings.json."""
    ctx = Context(run)
    out = Analysis()
    chosen = list(analyzers) if analyzers is not None else [load_analyzer(e) for e in ANALYZERS]
    check_order(chosen)
    needed = claimers_needed(chosen, only)
    for analyzer in chosen:
        # an analyzer left out by ``only`` still runs when a chosen one reads what it claims:
        # its findings go to the ledger only
        silent = bool(only) and analyzer.name not in only
        if silent and analyzer.name not in needed:
            continue
        missing = [t for t in analyzer.requires if not ctx.nonempty(t)]
        reason = (f"needs the {', '.join(missing)} table{'s' if len(missing) > 1 else ''}"
                  if missing else analyzer.skip_reason(ctx))
        if reason:
            if not silent:
                out.skipped.append({"analyzer": analyzer.name, "reason": reason})
            logger.debug("analyzer %s skipped: %s", analyzer.name, reason)
            continue
        t0 = time.perf_counter()
        try:
            found = analyzer.run(ctx)
        except Exception as exc:  # noqa: BLE001 - one analyzer's bug must not hide the others
            logger.exception("analyzer %s failed", analyzer.name)
            if not silent:
                out.failed.append({"analyzer": analyzer.name,
                                   "error": f"{type(exc).__name__}: {exc}"})
            continue
        finished = [_finish(f, ctx) for f in found]
        record_claims(analyzer, finished, ctx.claims)
        ctx.found.extend(finished)
        if silent:
            continue
        out.seconds[analyzer.name] = time.perf_counter() - t0
        logger.debug("analyzer %s: %d findings in %.3fs", analyzer.name, len(found),
                     out.seconds[analyzer.name])
        why = getattr(analyzer, "no_finding_reason", None)
        if not found and why:  # ran, found nothing, and can say why (a stated reason)
            out.skipped.append({"analyzer": analyzer.name, "reason": why})
        for f in finished:
            judged = _judge(f, ctx, out)
            if judged is not None:
                out.findings.append(judged)
    run_notes(ctx, out)
    # ranked findings first, then the ones with no saving (or one that cannot be claimed)
    out.findings = _dedupe(sorted(out.findings,
                                  key=lambda f: (f.severity == "info", *rank_key(f))))
    if write:
        try:
            atomic_write_bytes(run.path / FINDINGS_FILE,
                               orjson.dumps(out.to_json(), option=orjson.OPT_INDENT_2))
        except OSError as exc:
            # a run shared read-only: the findings are shown, only not kept
            logger.warning("findings not saved in %s (%s); they are shown but not kept",
                           run.path, exc.strerror or exc)
    return out


def _finish(f: Finding, ctx: Context) -> Finding:
    """Rate a finding against the run and fill the ``{run}`` and ``{id}`` placeholders an
    analyzer may leave in its verify command (the id is known only once the finding exists)."""
    f = f.rated(ctx.step_s, ctx.peak_bytes)
    if ctx.step_s is None and f.saving_s > 0 and "saving_per" not in f.data:
        # a trace that marks no steps: a saving is over the capture, never "ms/step" (the
        # analyzers word their figures so themselves, through ``Context.words``)
        f = replace(f, data={**f.data, "saving_per": "capture"})
    if "{" in f.verify or "}" in f.verify:
        fill = {"{{": "{", "}}": "}", "{run}": shlex.quote(str(ctx.run.path)), "{id}": f.id}
        f = replace(f, verify=_PLACEHOLDER.sub(lambda m: fill[m.group()], f.verify))
    return f


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{run\}|\{id\}")


def template_text(text: str) -> str:
    """Text from a run directory put into a verify command: braces doubled, so that
    ``_finish`` gives it back as it was and never reads a placeholder in it."""
    return text.replace("{", "{{").replace("}", "}}")


def shell_word(text: str) -> str:
    """Text from a run directory as one word of a verify command (quoted for the shell, its
    braces doubled for ``_finish``)."""
    return template_text(shlex.quote(text))


# Kinds whose advice only a GPU can act on (TF32, Tensor Core alignment): on a CPU run they
# leave the ranked list and become a "when you move to a GPU" note. (fp64 matrix math is slow
# on a CPU too, so tensor_core.fp64 stays a finding.) A finding whose ``data.gpu_only`` says
# why (a Conv-BN compile fix in training, measured slower on CPU) goes the same way.
GPU_ONLY_KINDS = ("tensor_core.tf32_off", "tensor_core.unaligned_dims")


# Analyzers whose time saving is built from the profiled ops' host times on a CPU run (the
# fusions; tensor_cores' fp64 price, cpu_fp64.py: its other kinds are GPU-only notes). When the
# thread was off the CPU most of a profiled step (other processes held the cores), those times
# are not the program's, and the estimate leaves the ranked list: "impact unknown; verify".
OP_TIME_ANALYZERS = ("fusion", "fusion_optimizer", "tensor_cores")
MIN_ON_CPU_SHARE = 0.5


def _judge(f: Finding, ctx: Context, out: Analysis) -> Finding | None:
    """Hold a finding to the run's preconditions. Timing claims from a run dsprof disturbed
    throughout (DEBUG trace, anomaly checks) are withheld: kept, unranked, with the reason.
    A time saving inside the run's step-time noise is kept unranked: verify could not measure
    it, and so is an op-time estimate from a CPU run whose thread was mostly off the CPU in the
    profiled steps (``impact_unknown``). GPU-only advice on a CPU run becomes a note (None: not a finding)."""
    if not ctx.on_gpu and (f.kind.startswith(GPU_ONLY_KINDS) or f.data.get("gpu_only")):
        out.notes.append({"kind": "gpu", "text": f"When you move to a GPU: {f.title}",
                          "finding_kind": f.kind})
        return None
    # a memory claim (checkpointing, batch size, a leak) is not held to step-time noise; a time
    # claim that also frees memory (a GELU swap) is
    if f.saving_s <= 0 or (f.saving_bytes > 0 and f.analyzer not in OP_TIME_ANALYZERS):
        return f
    if ctx.disturbance:
        why = DISTURBANCE[ctx.disturbance]
        return replace(f, severity="info", data={**f.data, "withheld": ctx.disturbance},
                       explanation=f"{f.explanation} Withheld: {why}, so this time is not the "
                                   "program's.".strip())
    # (a saving priced at calibrated thread-CPU costs, from shapes alone, reads no op time)
    if f.analyzer in OP_TIME_ANALYZERS and not ctx.on_gpu \
            and f.data.get(SAVING_CLOCK) != THREAD_CPU:
        share = profiled_on_cpu_share(ctx.run)
        if share is not None and share < MIN_ON_CPU_SHARE:
            return replace(
                f, severity="info", data={**f.data, "impact_unknown": round(share, 3)},
                explanation=(f"{f.explanation} Impact unknown; verify to measure: in the "
                             f"profiled steps the training thread ran on a CPU only "
                             f"{share:.0%} of the time (a loaded machine), so the op times "
                             "behind this estimate hold time spent waiting for a core.").strip())
    if f.data.get("impact_unknown") is not None:
        return replace(f, severity="info")  # the analyzer said why, in its explanation
    noise = ctx.noise
    if noise is not None and noise.inside(f.saving_s):
        return replace(f, severity="info", data={**f.data, "inside_noise": noise.to_json()},
                       explanation=(f"{f.explanation} Inside the noise: steady steps vary by "
                                    f"{noise.sd_s * 1e3:.3g} ms (robust sd over {noise.n} "
                                    f"steps), so a verify of as many steps cannot tell a "
                                    f"change under {noise.band_s() * 1e3:.3g} ms from "
                                    "none.").strip())
    return f


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """Keep the first (highest ranked) finding of each id."""
    seen: set[str] = set()
    out = []
    for f in findings:
        if f.id not in seen:
            seen.add(f.id)
            out.append(f)
    return out


def read_findings(run: Run) -> Analysis | None:
    """findings.json of a run, or None when it was never analyzed.

    Raises:
        RunDirError: the file is unreadable, truncated, or not findings dsprof wrote.
    """
    return read_findings_file(run.path)
