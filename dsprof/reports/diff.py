"""Two runs side by side: what changed, and whether an applied fix did what it promised.

Everything is per step, so runs of different lengths compare: step time over the steps that
count (a ``dsprof run``'s step 0, the setup, left out), throughput when the batch size is known
(``steps.batch_size``), peak memory (the allocator's per-step peak, else the live bytes of
``memory_series``, with their split by category, else the memory table's running total, else
RSS), and op and module self time per *profiled* step. Findings are matched
by id (kind + key, stable across runs): in A only = resolved, in B only = new.

Step time, samples/s and peak are ``run.facts`` (the one rule, shared with ``verify``, ``summary``
and the dashboard). When B was recorded with ``dsprof run --apply`` (manifest ``applied``), the
predicted saving of each applied finding is listed; the measured saving (the change of the
median step time, and of the peak) goes on that finding when it is the only one, else on one
row for all of them together.
The dashboard's Compare page and ``dsprof diff`` both present this; neither computes it.

Two runs compare only on like terms: ``warnings`` says when they ran on different devices,
world sizes, or kernel sets (a GEMM that left the Tensor Cores, a kernel family that appears in
one run only), so a step-time change or a "resolved" finding is not read as the effect of a
code change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dsprof.analyzers.registry import analyze, read_findings
from dsprof.facts import measured_saving
from dsprof.run import Run

ALL_APPLIED = "all"  # id of the row that holds the measured change of several findings


@dataclass(frozen=True)
class Side:
    path: str
    command: str | None
    steps: int
    step_ms: float | None
    median_ms: float | None
    samples_per_s: float | None
    peak_bytes: int | None
    peak_source: str | None
    profiled_steps: int
    peak_by_category: dict[str, int] = field(default_factory=dict)
    """Live bytes per category at the peak (``memory_series``), empty without it."""


@dataclass(frozen=True)
class Delta:
    name: str
    a_ms: float
    b_ms: float

    @property
    def delta_ms(self) -> float:
        return self.b_ms - self.a_ms


@dataclass(frozen=True)
class LoopDelta:
    """One loop of two runs that each held several one after another (a sweep run twice, before
    and after a change), matched by position: each side's step time by the one rule
    (``run.facts.loops``)."""

    loop: int
    a_steps: int
    b_steps: int
    a_median_ms: float | None
    b_median_ms: float | None
    a_samples_per_s: float | None
    b_samples_per_s: float | None


@dataclass(frozen=True)
class Applied:
    id: str
    title: str
    predicted_saving_ms: float
    measured_saving_ms: float | None
    predicted_saving_bytes: int
    measured_saving_bytes: int | None


@dataclass
class RunDiff:
    a: Side
    b: Side
    ops: list[Delta] = field(default_factory=list)
    modules: list[Delta] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    new: list[dict[str, Any]] = field(default_factory=list)
    remaining: list[dict[str, Any]] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Why the two runs may not compare (device, world size, kernel set, loops)."""
    loops: list[LoopDelta] = field(default_factory=list)
    """Loop by loop, where both runs held several loops one after another."""

    @property
    def step_change(self) -> float | None:
        """B's mean step time over A's, minus 1 (negative: B is faster)."""
        if not self.a.step_ms or self.b.step_ms is None:
            return None
        return self.b.step_ms / self.a.step_ms - 1

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for key in ("ops", "modules"):
            for d, row in zip(getattr(self, key), doc[key]):
                row["delta_ms"] = d.delta_ms
        doc["step_change"] = self.step_change
        return doc


def side(run: Run) -> Side:
    """One run's facts (``run.facts``: the step-time rule, peak and its source)."""
    facts = run.facts
    st = facts.step
    target = run.manifest.target
    return Side(str(run.path), " ".join(target.argv) if target else None, st.steps,
                None if st.mean_s is None else st.mean_s * 1e3,
                None if st.median_s is None else st.median_s * 1e3, st.samples_per_s,
                facts.peak_bytes, facts.peak_source, facts.profiled_steps,
                _peak_by_category(run))


def _peak_by_category(run: Run) -> dict[str, int]:
    if not run.has("memory_series"):
        return {}
    from dsprof.schema import table

    cats = [c.name for c in table("memory_series").columns
            if c.name not in ("rank", "device", "ts_ns", "step", "capture", "total")]
    row = run.sql(f"SELECT {', '.join(cats)} FROM memory_series ORDER BY total DESC, ts_ns "
                  "LIMIT 1")
    return {c: int(v or 0) for c, v in zip(cats, row[0], strict=True)} if row else {}


def _per_step(run: Run, column: str) -> dict[str, float]:
    """Self time per profiled step (ms) by op name or module."""
    if not run.has("ops"):
        return {}
    n = max(run.sql("SELECT count(*) FROM steps WHERE profiled")[0][0] if run.has("steps")
            else 0, 1)
    rows = run.sql(f"""
        SELECT {column}, sum(self_ns) FROM ops
        WHERE cat = 'cpu_op' AND {column} IS NOT NULL AND step IS NOT NULL
        GROUP BY {column}""")
    return {str(k): v / 1e6 / n for k, v in rows}


def _deltas(a: dict[str, float], b: dict[str, float], top: int) -> list[Delta]:
    names = set(a) | set(b)
    out = [Delta(n, a.get(n, 0.0), b.get(n, 0.0)) for n in names]
    out.sort(key=lambda d: (-abs(d.delta_ms), d.name))
    return [d for d in out[:top] if d.delta_ms != 0]


def _findings(run: Run) -> dict[str, dict[str, Any]]:
    res = read_findings(run) or analyze(run)
    return {f.id: {"id": f.id, "title": f.title, "saving_s": f.saving_s,
                   "saving_bytes": f.saving_bytes, "severity": f.severity}
            for f in res.findings}


def diff(a: Run, b: Run, top: int = 10) -> RunDiff:
    sa, sb = side(a), side(b)
    out = RunDiff(sa, sb, _deltas(_per_step(a, "name"), _per_step(b, "name"), top),
                  _deltas(_per_step(a, "module"), _per_step(b, "module"), top))
    fa, fb = _findings(a), _findings(b)
    out.resolved = [fa[i] for i in fa if i not in fb]
    out.new = [fb[i] for i in fb if i not in fa]
    out.remaining = [{**fb[i], "saving_s_before": fa[i]["saving_s"]} for i in fb if i in fa]
    out.warnings = comparability(a, b)
    out.loops, loop_warning = _loops(a, b)
    out.warnings += loop_warning
    plan = b.manifest.applied
    if plan is not None and plan.findings:
        measured_s, measured_bytes = measured_saving(a.facts, b.facts)
        rows = [Applied(str(f.get("id", "")), str(f.get("title", "")),
                        float(f.get("saving_s", 0.0) or 0.0) * 1e3, None,
                        int(f.get("saving_bytes", 0) or 0), None) for f in plan.findings]
        measured_ms = None if measured_s is None else measured_s * 1e3
        if len(rows) == 1:
            rows = [replace(rows[0], measured_saving_ms=measured_ms,
                            measured_saving_bytes=measured_bytes)]
        else:
            # the runs measure the change of all applied findings together: one row has it,
            # never each finding (that would credit every one with the whole change)
            rows.append(Applied(ALL_APPLIED, f"all {len(rows)} applied findings together",
                                sum(r.predicted_saving_ms for r in rows), measured_ms,
                                sum(r.predicted_saving_bytes for r in rows), measured_bytes))
        out.applied = rows
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _loops(a: Run, b: Run) -> tuple[list[LoopDelta], list[str]]:
    """Loop by loop by position, where both runs held several; a warning where the runs held
    different numbers of loops (the step times above are each run's recorded loop)."""
    la, lb = a.facts.loops, b.facts.loops
    na, nb = max(len(la), 1), max(len(lb), 1)
    warnings = []
    if na != nb:
        rec_a = next((x.loop for x in la if x.recorded), 0)
        rec_b = next((x.loop for x in lb if x.recorded), 0)
        warnings.append(
            f"A held {na} loop{'s' if na > 1 else ''} one after another and B {nb}: the step "
            f"times compare A's loop {rec_a} with B's loop {rec_b} (the ones profiled)"
            + ("; loops below are matched by position" if min(na, nb) > 1 else ""))
    if len(la) < 2 or len(lb) < 2:
        return [], warnings
    rows = [LoopDelta(x.loop, x.step.steps, y.step.steps, _ms(x.step.median_s),
                      _ms(y.step.median_s), x.step.samples_per_s, y.step.samples_per_s)
            for x, y in zip(la, lb)]
    return rows, warnings


def _device(run: Run) -> str | None:
    return run.manifest.device_name()


def _tensor_core_share(run: Run) -> float | None:
    """Share of gemm/conv kernel time on Tensor Cores (None without such kernels)."""
    if not run.has("kernels"):
        return None
    from dsprof.ingest.kernel_class import classify

    mm = tc = 0.0
    for name, dur in run.sql("SELECT name, sum(dur_ns) FROM kernels WHERE kind = 'compute' "
                             "GROUP BY name"):
        category, on_tc = classify(str(name))
        if category in ("gemm", "conv"):
            mm += float(dur)
            tc += float(dur) if on_tc else 0.0
    return tc / mm if mm else None


def _kernel_families(run: Run) -> dict[str, float]:
    """Kernel time share by the first word of each compute kernel's name (volta_sgemm ->
    volta), the families that say which code ran."""
    if not run.has("kernels"):
        return {}
    rows = run.sql("""SELECT regexp_extract(name, '^[A-Za-z0-9]+', 0) AS fam, sum(dur_ns)
                      FROM kernels WHERE kind = 'compute' GROUP BY fam""")
    total = sum(float(d) for _, d in rows) or 1.0
    return {str(f): float(d) / total for f, d in rows if f}


def comparability(a: Run, b: Run) -> list[str]:
    """Warnings when A and B ran on different hardware, scale or kernels."""
    out = []
    da, db = _device(a), _device(b)
    if da and db and da != db:
        out.append(f"the runs used different devices ({da} vs {db}): step time and precision "
                   "changes reflect the hardware, not only the code")
    wa, wb = int(a.manifest.world_size or 1), int(b.manifest.world_size or 1)
    if wa != wb:
        out.append(f"the runs have different world sizes ({wa} vs {wb} ranks): per-step "
                   "communication and step time do not compare")
    ta, tb = _tensor_core_share(a), _tensor_core_share(b)
    if ta is not None and tb is not None and abs(ta - tb) >= 0.25:
        out.append(f"GEMM/conv kernels on Tensor Cores went from {ta:.1%} to {tb:.1%}: the "
                   "runs ran different matrix kernels")
    fa, fb = _kernel_families(a), _kernel_families(b)
    only = sorted(f for f in set(fa) ^ set(fb) if max(fa.get(f, 0), fb.get(f, 0)) >= 0.10)
    if only:
        out.append("kernel families that hold 10 % or more of one run's kernel time are "
                   f"missing from the other ({', '.join(only[:5])}): different kernel sets")
    return out
