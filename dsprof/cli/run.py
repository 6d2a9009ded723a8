"""``dsprof run [OPTIONS] SCRIPT [ARGS]...`` and ``dsprof run -m MODULE [ARGS]...``."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from dsprof import launch, log
from dsprof.collectors.session import Session
from dsprof.errors import DsprofError
from dsprof.log import logger
from dsprof.rundir import RunDir, new_run_path
from dsprof.settings import Settings

_CONTEXT = {"allow_interspersed_args": False, "ignore_unknown_options": True}


@click.command("run", context_settings=_CONTEXT)
@click.option("-m", "module", metavar="MODULE", default=None,
              help="Run a module as `python -m MODULE` does.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Run directory to write [env DSPROF_OUTPUT; default RUNS_DIR/<script>-<stamp>].")
@click.option("--runs-dir", type=click.Path(path_type=Path), default=None,
              help="Where run directories go [env DSPROF_RUNS_DIR; default dsprof-runs].")
@click.option("--wait", type=int, default=None,
              help="Steps skipped before each window [env DSPROF_WAIT; default 5].")
@click.option("--warmup", type=int, default=None,
              help="Warm-up steps per window [env DSPROF_WARMUP; default 1].")
@click.option("--active", type=int, default=None,
              help="Steps recorded per window [env DSPROF_ACTIVE; default 3].")
@click.option("--repeat", type=int, default=None,
              help="Number of windows, 0 = until exit [env DSPROF_REPEAT; default 1].")
@click.option("--max-capture", "max_capture_s", type=float, default=None,
              help="Seconds captured when the script marks no steps "
                   "[env DSPROF_MAX_CAPTURE_S; default 60].")
@click.option("--with-stack", "with_stack", is_flag=True, default=False,
              help="Also record Python stacks in windows, kept in the raw traces for Perfetto "
                   "or HTA; costs time in the window [env DSPROF_WITH_STACK=1].")
@click.option("--no-analyze", "no_analyze", is_flag=True, default=False,
              help="Only write raw/ at exit; `dsprof summary` ingests later [env DSPROF_ANALYZE=0].")
@click.option("-q", "--quiet", is_flag=True, default=False,
              help="Print nothing but errors [env DSPROF_QUIET=1].")
@click.option("--tf32", is_flag=True, default=False,
              help="Turn on TF32 Tensor Cores for fp32 matmuls and convolutions in the script "
                   "[env DS_ENABLE_TENSOR_CORE=1 or DSPROF_TF32=1].")
@click.option("--sample-ms", "sample_ms", type=float, default=None,
              help="Period of the host/GPU metric sampler in ms, 0 = off "
                   "[env DSPROF_SAMPLE_MS; default 100].")
@click.option("--cupti-kernels", "cupti_kernels", is_flag=True, default=False,
              help="Record every kernel of the whole run with CUPTI (cupti-python), paused "
                   "while a profiler window records [env DSPROF_CUPTI_KERNELS=1].")
@click.option("--apply", "apply_ids", metavar="ID[,ID]", default=None,
              help="Apply these findings' fixes through their knobs (DS_COMPILE=...); "
                   "recorded in meta.json with their predicted savings.")
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="The run the --apply findings come from [default: the newest run in "
                   "RUNS_DIR that has them].")
@click.argument("target", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run_command(ctx: click.Context, module: str | None, output: Path | None,
                runs_dir: Path | None, wait: int | None, warmup: int | None, active: int | None,
                repeat: int | None, max_capture_s: float | None, with_stack: bool,
                no_analyze: bool, quiet: bool, tf32: bool, sample_ms: float | None,
                cupti_kernels: bool, apply_ids: str | None, baseline: Path | None,
                target: tuple[str, ...]) -> None:
    """Profile SCRIPT (or -m MODULE) with its own ARGS, unmodified.

    Step boundaries come from optimizer.step() (or dsprof.step()); every step is timed, and
    ACTIVE steps after WAIT+WARMUP are recorded op by op. At exit the run directory is
    ingested and summarized; the exit status is the script's own.
    """
    overrides = {
        "output": output, "runs_dir": runs_dir, "wait": wait, "warmup": warmup,
        "active": active, "repeat": repeat, "max_capture_s": max_capture_s,
        "with_stack": True if with_stack else None, "analyze": False if no_analyze else None,
        "quiet": True if quiet else None, "tf32": True if tf32 else None,
        "sample_ms": sample_ms, "cupti_kernels": True if cupti_kernels else None}
    settings = Settings.load(**overrides)
    if log.configure(quiet=settings.quiet) > logging.DEBUG:
        # Kineto prints "USDT: profiler_start/stop" at every window; below DEBUG that is noise.
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    if module is not None:
        tgt = launch.prepare_module(module, target)
    elif target:
        tgt = launch.prepare_script(target[0], target[1:])
    else:
        raise click.UsageError("give a SCRIPT to run (or -m MODULE)")
    applied = None
    if apply_ids is not None:
        from dsprof.apply.plan import parse_ids, plan

        applied = plan(parse_ids(apply_ids), baseline, settings.runs_dir)
        os.environ.update(applied.env)
        settings = Settings.load(**overrides)  # knobs that are settings (DS_ENABLE_TENSOR_CORE)
    elif baseline is not None:
        raise click.UsageError("--baseline goes with --apply ID")
    run = RunDir.create(settings.output or new_run_path(settings.runs_dir, tgt.display_name))
    log.attach_file(run.log_path)
    session = Session(settings, run, tgt.to_json())
    session.start()
    if applied is not None:
        run.update_meta(applied=applied.to_json())
    previous = _terminate_as_exit()
    try:
        outcome = launch.run(tgt)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    session.finish(outcome.exit_status, outcome.reason)
    if settings.analyze:
        _analyze(run, quiet=settings.quiet)
    elif not settings.quiet:
        Console(stderr=True, highlight=False).print(
            f"dsprof: raw data in {run.path}; next: [bold]dsprof summary {run.path}[/]",
            soft_wrap=True)
    log.detach_file()
    ctx.exit(outcome.exit_status)


def _terminate_as_exit() -> Any:
    """SIGTERM ends the script like an exception (status 143), so the run is still saved."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _analyze(run: RunDir, quiet: bool) -> None:
    from dsprof.analyzers.breakdown import summarize
    from dsprof.analyzers.registry import analyze
    from dsprof.render.summary import render_short
    from dsprof.run import load

    try:
        with load(run.path) as loaded:
            summary = summarize(loaded)
            findings = analyze(loaded)
    except DsprofError as exc:
        logger.error("could not analyze the run: %s", exc)
        return
    except KeyboardInterrupt:
        logger.warning("analysis interrupted; the raw data is saved: `dsprof summary %s` "
                       "analyzes it later", run.path)
        return
    except Exception as exc:  # noqa: BLE001 - the script's exit status must survive our bugs
        logger.exception("analysis failed (the raw data is kept in %s): %s", run.path, exc)
        return
    if not quiet:
        render_short(summary, Console(stderr=True, highlight=False), str(run.path), findings)
    sys.stderr.flush()
