"""``dsprof run --apply ID[,ID] [--baseline RUN]``: from finding ids to knob settings.

The findings come from the baseline run's findings.json (by default the newest run in the runs
folder that has all the ids). Their ``apply`` knobs are merged (``DS_COMPILE`` module lists are
joined, and so are
``DS_LIBRARY_OP`` pairs; any other knob must agree) and set in the environment before the session starts; the
new run's meta.json records which findings were applied, their predicted savings and the
baseline, so ``dsprof verify`` and ``dsprof diff`` can set measured against predicted.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsprof.apply import KNOB_ENV
from dsprof.errors import ConfigError, RunDirError
from dsprof.findings import Finding
from dsprof.module_paths import join_knob_paths, split_knob_paths
from dsprof.render.safe_text import one_line

_JOINED = {"DS_COMPILE", "DS_LIBRARY_OP"}
# The variables a finding may set: the knobs dsprof/apply reads (KNOB_ENV), TF32's setting
# (DS_ENABLE_TENSOR_CORE, dsprof/settings.py) and the CUDA allocator's. findings.json is the
# run directory's (anyone's), and what it asks to set becomes the environment of the script
# that `dsprof run --apply` and `dsprof verify` run: nothing else (LD_PRELOAD, PYTHONPATH,
# PYTHONSTARTUP) is ever set from it.
KNOBS = frozenset(KNOB_ENV) | {"DS_ENABLE_TENSOR_CORE", "PYTORCH_CUDA_ALLOC_CONF"}
# the plan, carried into the process that starts over once it is made (plan_for_run)
APPLIED_PLAN_ENV = "DSPROF_APPLIED_PLAN"


@dataclass
class ApplyPlan:
    baseline: Path
    findings: list[Finding]
    env: dict[str, str] = field(default_factory=dict)
    baseline_step_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": str(self.baseline),
            "baseline_step_s": self.baseline_step_s,
            "findings": [{"id": f.id, "kind": f.kind, "title": f.title, "saving_s": f.saving_s,
                          "saving_bytes": f.saving_bytes, "apply": f.apply,
                          "severity": f.severity,  # ranked or not, for the reader
                          # verify's paired verdict: which clock the saving is priced in
                          "saving_clock": f.data.get("saving_clock")}
                         for f in self.findings],
            "predicted_saving_s": sum(f.saving_s for f in self.findings),
            "predicted_saving_bytes": sum(f.saving_bytes for f in self.findings),
            "env": self.env,
        }


def parse_ids(text: str) -> list[str]:
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise ConfigError("--apply needs finding ids, e.g. --apply fusion-4a7b5d6a")
    return ids


def _findings_of(run_path: Path) -> tuple[list[Finding], float | None]:
    from dsprof.analyzers.registry import Context, analyze, read_findings
    from dsprof.run import load

    with load(run_path) as run:
        analysis = read_findings(run) or analyze(run)
        step_s = Context(run).step_s
    return analysis.findings, step_s


def _match(findings: list[Finding], wanted: str) -> Finding | None:
    hits = [f for f in findings if f.id == wanted] or \
        [f for f in findings if f.id.startswith(wanted)]
    return hits[0] if len(hits) == 1 else None


def find_baseline(runs_dir: Path, ids: list[str]) -> Path:
    """The newest run under ``runs_dir`` whose findings.json has every id."""
    import orjson

    candidates = sorted((p for p in runs_dir.glob("*/findings.json")),
                        key=lambda p: p.stat().st_mtime, reverse=True) if runs_dir.is_dir() else []
    for path in candidates:
        try:
            have = {f["id"] for f in orjson.loads(path.read_bytes()).get("findings", [])}
        except (OSError, ValueError):
            continue
        if all(any(h == i or h.startswith(i) for h in have) for i in ids):
            return path.parent
    raise RunDirError(f"no run in {runs_dir} has finding(s) {', '.join(ids)}; "
                      "name the run they came from with --baseline RUN")


def plan_for_run(apply_ids: str, baseline: Path | None, runs_dir: Path,
                 start_over: bool) -> dict[str, Any]:
    """``dsprof run --apply``: the plan (meta ``applied``), with its knobs set in ``os.environ``
    (ranks started later inherit them).

    Planning analyzes the baseline, which loads numpy, pyarrow and DuckDB (60+ MiB) into the
    process, where the baseline's own run had none of them before its script. With
    ``start_over`` the process then starts over (``exec``: the same pid and streams, the same
    command line) with the plan in ``DSPROF_APPLIED_PLAN``, so the script meets what a plain
    ``dsprof run`` gives it, with only the knobs added: ``verify`` measures the fix, not
    dsprof's imports. The process that starts over finds the plan there and returns it.
    """
    carried = os.environ.pop(APPLIED_PLAN_ENV, None)
    if carried is not None:
        import orjson

        plan_json: dict[str, Any] = orjson.loads(carried)
        return plan_json
    applied = plan(parse_ids(apply_ids), baseline, runs_dir)
    os.environ.update(applied.env)
    if not start_over:
        return applied.to_json()
    import orjson

    os.environ[APPLIED_PLAN_ENV] = orjson.dumps(applied.to_json()).decode()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, sys.orig_argv)


def plan(ids: list[str], baseline: Path | None, runs_dir: Path) -> ApplyPlan:
    """Resolve ``ids`` against the baseline's findings into one environment.

    Raises:
        RunDirError: the baseline is not a run or was never analyzed.
        ConfigError: an id is unknown or ambiguous, has no knob, or two knobs disagree.
    """
    base = baseline if baseline is not None else find_baseline(runs_dir, ids)
    findings, step_s = _findings_of(base)
    chosen: list[Finding] = []
    env: dict[str, str] = {}
    for wanted in ids:
        f = _match(findings, wanted)
        if f is None:
            known = ", ".join(x.id for x in findings) or "none"
            raise ConfigError(f"{base} has no single finding {wanted!r} (its findings: {known})")
        if not f.apply:
            # an advice dsprof does not apply (not advised here: a what-if) may still say how
            # to measure it by hand: its verify line, where that names a knob
            by_knob = "DS_" in (f.verify or "") and "dsprof run" in (f.verify or "")
            raise ConfigError(
                f"finding {f.id} ({f.title}) has no automatic fix" + (
                    "; it is not advised on this run, so verify does not apply it. To measure "
                    f"it anyway: {one_line(f.verify)}" if by_knob else
                    f"; apply it by hand:\n{f.fix}"))
        for name, value in f.apply.items():
            if name not in KNOBS or not isinstance(value, str):
                raise ConfigError(
                    f"finding {f.id} of {base} asks to set {one_line(name)}, which is not one "
                    f"of dsprof's knobs ({', '.join(sorted(KNOBS))}); its findings.json was not "
                    "written by dsprof: refused")
            if name in _JOINED and name in env:
                have = split_knob_paths(env[name])
                env[name] = join_knob_paths(
                    have + [v for v in split_knob_paths(value) if v not in have])
            elif name in env and env[name] != value:
                raise ConfigError(f"findings disagree on {name} ({env[name]!r} vs {value!r})")
            else:
                env[name] = value
        chosen.append(f)
    return ApplyPlan(base, chosen, env, step_s)
