"""``dsprof verify RUN ID``: rerun RUN's own command with the finding applied, then set the
measured step time and peak memory against the prediction.

Which steps are measured: the same in both runs, and only steps that ran at full speed: not
step 0 (setup) or step 1 (where ``DS_COMPILE`` compiles and every first call pays its
one-time costs), not the steps of a profiler window or its warm-up (the profiler slows ops
down), and not the step after a window (the trace is written then). The median of what is left
is the step time (``run.facts``; the comparison itself is ``reports.verification``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from dsprof.errors import ConfigError, RunDirError
from dsprof.interpreter_options import allowed as allowed_options
from dsprof.manifest import load_manifest
from dsprof.reports.verification import Verification, compare
from dsprof.rundir import new_run_path
from dsprof.speed_env import differences, rerun_env

__all__ = ["Verification", "compare", "environment_said", "rerun_command", "verify"]


def rerun_command(baseline: Path, ids: list[str] | None,
                  out: Path) -> tuple[list[str], Path, dict[str, str]]:
    """The ``dsprof run`` that repeats the baseline's command, with ``--apply ids`` if given."""
    manifest = load_manifest(baseline)
    target = manifest.target
    if not manifest.is_run or target is None:
        raise RunDirError(f"{baseline} was not recorded by `dsprof run` (an import?); "
                          "there is no command to rerun")
    settings = manifest.settings
    # its ranks again, as the baseline's: without them a torchrun-style script finds no RANK
    # to rendezvous with and exits 1
    ranks = manifest.rerun_ranks()
    # the interpreter's options of the run (python -W error -m dsprof run ...): without them
    # the rerun's script had sys.warnoptions == []. Only Python's own, from an allow-list
    # (meta.json is data: interpreter_options.py)
    python = [sys.executable, *allowed_options(manifest.raw.get("interpreter_options"))]
    cmd = [*python, "-m", "dsprof", "run", "-o", str(out), *(ranks or [])]
    if ranks is None:
        again = " ".join(shlex.quote(a) for a in (
            "-m", "dsprof", "run", "-o", str(out), *(["--apply", ",".join(ids),
                                                      "--baseline", str(baseline)]
                                                     if ids else []),
            *(["-m", target.name, *target.argv[1:]] if target.kind == "module"
              else ["--", *target.argv])))
        raise ConfigError(
            f"{baseline}'s ranks were started by the job's own launcher (torchrun or another), "
            "which dsprof verify cannot start again. Launch the job as before with dsprof on "
            f"each rank: torchrun ... {again}; then compare: dsprof diff {baseline} {out}")
    if ids:
        cmd += ["--apply", ",".join(ids), "--baseline", str(baseline.resolve())]
    for name in ("wait", "warmup", "active", "repeat"):
        if settings.get(name) is not None:
            cmd += [f"--{name}", str(settings[name])]
    if target.kind == "module":
        cmd += ["-m", target.name, *target.argv[1:]]
    else:
        # after "--": a script whose name starts with "-" is the script, never an option
        cmd += ["--", *target.argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DS_", "DSPROF_"))}
    env.update({k: v for k, v in manifest.env.items()
                if k.startswith(("DS_", "DSPROF_")) and k != "DSPROF_OUTPUT"})
    # the run's threads, allocator and compiler settings, not this shell's (speed_env.py)
    env = rerun_env(env, manifest.raw.get("speed_env"))
    return cmd, Path(manifest.cwd or "."), env


def environment_said(baseline: Path) -> str | None:
    """The speed settings a rerun gets back that this shell has otherwise, for verify to say
    (None: none differ, or the run recorded none)."""
    recorded = load_manifest(baseline).raw.get("speed_env")
    changed = differences(os.environ, rerun_env(os.environ, recorded), recorded)
    return ("as the run had them: " + ", ".join(changed[:8])
            + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")) if changed else None


def _rerun(baseline: Path, ids: list[str] | None, out: Path, quiet: bool) -> None:
    cmd, cwd, env = rerun_command(baseline, ids, out)
    if quiet:  # after dsprof's "run" (an option's value may be any word)
        at = next(i for i in range(len(cmd)) if cmd[i:i + 3] == ["-m", "dsprof", "run"])
        cmd.insert(at + 3, "-q")
    # stdout is verify's own result (text or --json): the rerun's output goes to stderr with
    # -v, and nowhere without (its errors still reach stderr)
    proc = subprocess.run(cmd, cwd=cwd, env=env, check=False,
                          stdout=subprocess.DEVNULL if quiet else sys.stderr.fileno())
    if proc.returncode != 0 or not (out / "meta.json").is_file():
        raise RunDirError(f"the rerun exited with status {proc.returncode}; see {out}")


def verify(baseline: Path, ids: list[str], out: Path | None = None, quiet: bool = True,
           fresh_baseline: bool = False, rounds: int = 1,
           progress: Callable[[str], None] | None = None) -> Verification:
    """Rerun ``baseline``'s command with ``ids`` applied into ``out`` and compare.

    Args:
        fresh_baseline: also rerun the command without the fix (into ``<out>-baseline``) and
            measure the baseline step time there: on a shared or busy machine the original
            run's speed may not be today's.
        rounds: run the pair (fresh baseline, then with the fix) this many times, alternating
            (``<out>-r<k>-baseline``, ``<out>-r<k>``); implies a fresh baseline. Round ``k``'s
            change is baseline ``k``'s median step - fix ``k``'s; from two rounds the verdict
            is on their mean and its 95 % interval (``reports.paired_verdict``).
        progress: told, before each rerun, what is about to run.

    Raises:
        RunDirError: the baseline cannot be rerun, or the rerun failed.
        ConfigError: an id is unknown or has no knob (checked before anything runs).
    """
    from dsprof.apply.plan import plan

    if rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    baseline = baseline.resolve()
    plan(ids, baseline, baseline.parent)  # fail before running anything
    out = out or new_run_path(baseline.parent, f"{baseline.name}-verify")
    rerun_command(baseline, ids, out)  # and a job it cannot start again (torchrun's)
    tell = progress or (lambda _text: None)
    if rounds == 1:
        fresh = out.with_name(out.name + "-baseline") if fresh_baseline else None
        total = 2 if fresh is not None else 1
        if fresh is not None:
            tell(f"run 1/{total}: the script without the fix (fresh baseline)")
            _rerun(baseline, None, fresh, quiet)
        tell(f"run {total}/{total}: the script with {', '.join(ids)} applied")
        _rerun(baseline, ids, out, quiet)
        return compare(out, fresh)
    bases, applied = [], []
    for k in range(rounds):
        bases.append(out.with_name(f"{out.name}-r{k}-baseline"))
        applied.append(out.with_name(f"{out.name}-r{k}"))
        tell(f"round {k + 1}/{rounds}: the script without the fix")
        _rerun(baseline, None, bases[-1], quiet)
        tell(f"round {k + 1}/{rounds}: the script with {', '.join(ids)} applied")
        _rerun(baseline, ids, applied[-1], quiet)
    return compare(applied, bases)
