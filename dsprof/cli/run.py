"""``dsprof run [OPTIONS] SCRIPT [ARGS]...`` and ``dsprof run -m MODULE [ARGS]...``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from dsprof import launch, log
from dsprof.cli import last_words
from dsprof.cli.interrupted import end_as_the_script
from dsprof.cli.module_args import RunCommand
from dsprof.collectors.deferred_session import DeferredSession
from dsprof.errors import ConfigError, DsprofError
from dsprof.log import logger
from dsprof.ranks import RankEnv, merge_ranks, open_shared, shared_run_path, wait_for_ranks
from dsprof.render.safe_text import esc
from dsprof.rundir import RunDir, new_run_path
from dsprof.settings import Settings
from dsprof.terminate import EXIT_STATUS, TermWatcher, grace_from_env

_CONTEXT = {"allow_interspersed_args": False, "ignore_unknown_options": True}
# Rank 0 under the user's torchrun waits this long at exit for the other ranks to save.
RANK_WAIT_S = 30.0


@click.command("run", cls=RunCommand, context_settings=_CONTEXT)
@click.option("-m", "module", metavar="MODULE", default=None,
              help="Run a module as `python -m MODULE` does; every argument after MODULE "
                   "is the module's.")
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
@click.option("--max-capture-mb", "max_capture_mb", type=float, default=None,
              help="MiB the process's heap may grow while the capture before the first "
                   "step records (the profiler keeps every op until it stops) "
                   "[env DSPROF_MAX_CAPTURE_MB; default 128].")
@click.option("--with-stack", "with_stack", is_flag=True, default=False,
              help="Also record Python stacks in windows, kept in the raw traces for Perfetto "
                   "or HTA; costs time in the window [env DSPROF_WITH_STACK=1].")
@click.option("--memory-budget", "memory_budget", default=None, metavar="BYTES",
              help="Stop the script as out of memory when the profiled steps' live bytes exceed "
                   "BYTES (e.g. 2GiB); a post-mortem says what filled memory "
                   "[env DSPROF_MEMORY_BUDGET].")
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
@click.option("--nproc-per-node", "nproc_per_node", type=click.IntRange(min=1), default=None,
              help="Start N ranks through torch.distributed's elastic launcher (torchrun), "
                   "one dsprof session each, into one run directory.")
@click.option("--detect-anomaly", "detect_anomaly", is_flag=True, default=False,
              help="Check every op's floating outputs for NaN/Inf and stop at the first, "
                   "naming op, module, phase, step and line [env DSPROF_DETECT_ANOMALY=1; "
                   "always on at DS_LOG_LEVEL=DEBUG].")
@click.option("--trace-filter", "trace_filter", default=None, metavar="TERMS",
              help="Ops the DS_LOG_LEVEL=DEBUG trace prints, e.g. 'op:addmm module:blocks.0 "
                   "step:3-5' [env DSPROF_TRACE_FILTER].")
@click.option("--trace-alloc-bytes", "trace_alloc_bytes", type=int, default=None,
              help="The DEBUG trace logs op outputs of at least this many new bytes "
                   "[env DSPROF_TRACE_ALLOC_BYTES; default 1048576; 0: none].")
@click.option("--apply", "apply_ids", metavar="ID[,ID]", default=None,
              help="Apply these findings' fixes through their knobs (DS_COMPILE=...); "
                   "recorded in meta.json with their predicted savings.")
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="The run the --apply findings come from [default: the newest run in "
                   "RUNS_DIR that has them].")
@click.option("--dashboard", is_flag=True, default=False,
              help="When the run ends, serve its dashboard on 127.0.0.1 until Ctrl-C.")
@click.option("--dashboard-port", type=int, default=8050, show_default=True,
              help="Port for --dashboard (0 picks a free one).")
@click.argument("target", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run_command(ctx: click.Context, module: str | None, output: Path | None,
                runs_dir: Path | None, wait: int | None, warmup: int | None, active: int | None,
                repeat: int | None, max_capture_s: float | None,
                max_capture_mb: float | None, with_stack: bool,
                memory_budget: str | None, no_analyze: bool, quiet: bool, tf32: bool,
                sample_ms: float | None, cupti_kernels: bool, nproc_per_node: int | None,
                detect_anomaly: bool, trace_filter: str | None, trace_alloc_bytes: int | None,
                apply_ids: str | None, baseline: Path | None, dashboard: bool,
                dashboard_port: int,
                target: tuple[str, ...]) -> None:
    """Profile SCRIPT (or -m MODULE) with its own ARGS, unmodified.

    Step boundaries come from optimizer.step() (or dsprof.step()), else from backward(), else
    (inference) from each outermost module call; every step is timed, and
    ACTIVE steps after WAIT+WARMUP are recorded op by op. At exit the run directory is
    ingested and summarized; the exit status is the script's own.

    With --nproc-per-node N, N ranks run under torch's elastic launcher (as torchrun starts
    them) and the exit status is the launcher's. Under your own torchrun, use
    `torchrun --nproc-per-node N -m dsprof run SCRIPT ARGS`.
    """
    overrides = {
        "output": output, "runs_dir": runs_dir, "wait": wait, "warmup": warmup,
        "active": active, "repeat": repeat, "max_capture_s": max_capture_s,
        "max_capture_mb": max_capture_mb,
        "with_stack": True if with_stack else None, "analyze": False if no_analyze else None,
        "quiet": True if quiet else None, "tf32": True if tf32 else None,
        "sample_ms": sample_ms, "cupti_kernels": True if cupti_kernels else None,
        "memory_budget": _budget(memory_budget),
        "detect_anomaly": True if detect_anomaly else None, "trace_filter": trace_filter,
        "trace_alloc_bytes": trace_alloc_bytes}
    settings = Settings.load(**overrides)
    ranks = RankEnv.from_env()
    # where dsprof speaks after the script: the stderr it started with, not whatever the
    # script left in sys.stderr (its own log file must not get dsprof's lines), if still open
    terminal = log.StreamAsFound(sys.stderr)
    # under the user's torchrun, rank 0 speaks for the job; the other ranks log to their files
    # (Kineto's "USDT: profiler_start/stop" lines: collectors/kineto_log.py)
    log.configure(quiet=settings.quiet or (ranks.distributed and not ranks.coordinator))
    if module is not None:
        tgt = launch.prepare_module(module, target)
    elif target:
        tgt = launch.prepare_script(target[0], target[1:])
    else:
        raise click.UsageError("give a SCRIPT to run (or -m MODULE)")
    applied = None
    if apply_ids is not None:
        from dsprof import cli
        from dsprof.apply.plan import plan_for_run

        # as the process's command line, it starts over once the plan is made (plan.py says why)
        applied = plan_for_run(apply_ids, baseline, settings.runs_dir,
                               start_over=cli.is_entry_point())
        settings = Settings.load(**overrides)  # knobs that are settings (DS_ENABLE_TENSOR_CORE)
    elif baseline is not None:
        raise click.UsageError("--baseline goes with --apply ID")
    if nproc_per_node is not None:
        if ranks.distributed:
            raise ConfigError("--nproc-per-node inside a rank of a distributed job: run "
                              "either `dsprof run --nproc-per-node N SCRIPT` or "
                              "`torchrun ... -m dsprof run SCRIPT`, not both")
        _launch_ranks(ctx, settings, tgt, nproc_per_node,
                      dashboard_port if dashboard else None, applied)
        return
    if ranks.distributed:
        run = open_shared(settings.output or shared_run_path(settings.runs_dir,
                                                             tgt.display_name))
        log.attach_file(run.raw_dir(ranks.rank) / "dsprof.log")
    else:
        run = RunDir.create(settings.output or new_run_path(settings.runs_dir, tgt.display_name))
        log.attach_file(run.log_path)
    # torch (and with it every collector) loads when the script imports it, as without dsprof:
    # what the script sets before its ``import torch`` (OMP_NUM_THREADS) still counts
    deferred = DeferredSession(settings, run, tgt.to_json(), ranks)
    if applied is not None:
        deferred.after_start.append(lambda s: run.update_meta(applied=applied))
    terminate = TermWatcher(lambda: deferred.finish(EXIT_STATUS, "terminated", "SIGTERM"),
                            grace_from_env())
    if terminate.install():
        deferred.after_start.append(lambda s: s.on_fork_child.append(terminate.forget_in_child))
    deferred.start_when_torch_loads()
    outcome = launch.run(tgt)
    if deferred.in_forked_child:
        _exit_forked_child(outcome.exit_status)
    session = deferred.start_if_not_yet()
    if session is None:  # it could not start: the script ran unprofiled, its status stands
        if deferred.lock is not None:
            deferred.lock.release()
        log.detach_file()
        terminate.uninstall()
        launch.as_the_script_left_it()
        end_as_the_script(ctx, outcome)
    terminate.hold()  # from here a SIGTERM ends the process once the run is saved
    session.finish(outcome.exit_status, outcome.reason, outcome.error, outcome.peer_lost)
    own_ingest_s = None
    own_ingest = ranks.ingests_own_trace and (ranks.launched or settings.analyze)
    # A rank whose script failed ends now, as it would without dsprof: the others may be
    # blocked in a collective until its process (and its sockets) go, and torchrun stops them
    # once it sees this rank exit (waiting for them held a failed rank 1 for the whole
    # RANK_WAIT_S, and rank 0 in its all-reduce with it; its own ingest held it 3 s). Its raw
    # data is saved: whoever reads the run first ingests it. The coordinator still waits: it
    # merges the ranks.
    failed_rank = outcome.exit_status != 0 and not ranks.coordinator
    if (ranks.coordinator or own_ingest) and not failed_rank:
        # dsprof's heavy work waits until no rank runs its script any more (ranks.py says why)
        wait_for_ranks(run, ranks.world_size, RANK_WAIT_S)
    if own_ingest and not failed_rank:
        own_ingest_s = _ingest_own_rank(run, ranks.rank)
    if ranks.coordinator:
        # rank 0 under the user's torchrun: the other ranks' own ingests, then merge and ingest
        if own_ingest_s is not None:
            _wait_for_own_ingests(run, ranks.world_size, own_ingest_s)
        merged = merge_ranks(run, ranks.world_size)
        run.update_meta(**merged, status="finished", exit_status=outcome.exit_status,
                        exit_reason=outcome.reason)
    from dsprof import cli

    # written after the script's own exit output where an interpreter exit follows
    last = cli.is_entry_point() and not dashboard
    if settings.analyze and (not ranks.distributed or ranks.coordinator):
        _analyze(run, quiet=settings.quiet, terminal=terminal, last=last)
    elif not settings.quiet and not ranks.distributed:
        _say_raw_data(run, terminal, last)
    session.release()
    log.detach_file()
    terminate.uninstall()  # the interpreter's own exit: SIGTERM does what it does without dsprof
    if dashboard and (not ranks.distributed or ranks.coordinator):
        _serve_dashboard(run, dashboard_port)
    launch.as_the_script_left_it()  # for its atexit handlers
    end_as_the_script(ctx, outcome)


def _launch_ranks(ctx: click.Context, settings: Settings, tgt: launch.Target, nproc: int,
                  dashboard_port: int | None, applied: dict[str, Any] | None) -> None:
    from dsprof.launch_ranks import launch as launch_ranks
    from dsprof.runlock import acquire

    run = RunDir.create(settings.output or new_run_path(settings.runs_dir, tgt.display_name))
    lock = acquire(run)  # the ranks write it: other commands leave it alone until the end
    log.attach_file(run.log_path)
    status = launch_ranks(settings, tgt, run, nproc, applied)
    if settings.analyze:
        _analyze(run, quiet=settings.quiet, terminal=sys.stderr)
    elif not settings.quiet:
        _say_raw_data(run, sys.stderr, last=False)
    if lock is not None:
        lock.release()
    log.detach_file()
    if dashboard_port is not None:
        _serve_dashboard(run, dashboard_port)
    ctx.exit(status)


def _exit_forked_child(status: int) -> None:
    """A process the script forked came back here: it is not the session. Its exit is its own:
    no summary, nothing written into the run, its status as it gave it. It runs its atexit
    handlers and flushes its streams as Python would, then ends with ``os._exit``: the C
    library's exit would run torch's static destructors, and Kineto's, copied mid-use from
    the parent, wait forever for the parent's threads."""
    import atexit

    launch.as_the_script_left_it()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - a closed stream must not change the status
            pass
    os._exit(status)


def _serve_dashboard(run: RunDir, port: int) -> None:
    """``--dashboard``: serve the finished run until Ctrl-C (the exit status stays the
    script's)."""
    from dsprof.cli.dashboard import serve

    try:
        serve(str(run.path), None, "127.0.0.1", port)
    except DsprofError as exc:
        logger.error("could not serve the dashboard: %s", exc)


def _budget(text: str | None) -> int | None:
    from dsprof.errors import ConfigError
    from dsprof.settings import parse_bytes

    if text is None:
        return None
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise ConfigError(f"--memory-budget {text!r} is not valid: {exc}") from None


def _ingest_own_rank(run: RunDir, rank: int) -> float | None:
    """This rank's trace into its Parquet parts now, on its own node, beside the other ranks
    (DESIGN.md "Scale"); the coordinator then reuses them. Failing here costs nothing but
    time: the coordinator ingests the rank as it would have anyway. Returns the seconds it
    took (None when it failed)."""
    import time

    from dsprof.ingest.own_rank import ingest_own_rank

    t0 = time.monotonic()
    try:
        ingest_own_rank(run, rank)
    except KeyboardInterrupt:
        logger.warning("rank %d: own ingest interrupted; the coordinator ingests it", rank)
        return None
    except Exception as exc:  # noqa: BLE001 - the script's exit status must survive our bugs
        logger.warning("rank %d: own ingest failed (%s); the coordinator ingests it", rank, exc)
        return None
    return time.monotonic() - t0


def _wait_for_own_ingests(run: RunDir, world_size: int, own_s: float) -> None:
    """Give the finished ranks the time their own ingest takes (they began it about when this
    rank began its own, so a few times this rank's) rather than parse them twice; a rank still
    without a record after that is ingested here."""
    from dsprof.ingest.own_rank import wait_for_own_ingests
    from dsprof.ranks import read_record

    # a rank whose script failed left its trace raw (it ended at once): nothing to wait for
    finished = [r for r in range(world_size)
                if (rec := read_record(run, r)) is not None and rec.get("status") == "finished"
                and rec.get("exit_status") == 0]
    late = wait_for_own_ingests(run, finished, timeout_s=max(5.0, 3 * own_s))
    if late:
        logger.info("ranks %s did not ingest their own trace in time; ingesting them here",
                    late)


def _say_raw_data(run: RunDir, terminal: Any, last: bool) -> None:
    last_words.say(terminal, lambda console: console.print(
        f"dsprof: raw data in {esc(run.shown)}; next: [bold]dsprof summary {esc(run.shown)}[/]",
        soft_wrap=True), last)


def _analyze(run: RunDir, quiet: bool, terminal: Any, last: bool = False) -> None:
    from dsprof.analyzers.registry import analyze
    from dsprof.render.summary import render_short
    from dsprof.reports import stored
    from dsprof.reports.summary import summarize
    from dsprof.run import load

    postmortem = None
    try:
        with load(run.path) as loaded:
            # ~100 queries follow (the summary's and the analyzers'): a small run's tables are
            # read once into memory rather than bound and decoded from Parquet per query
            loaded.hold_tables_in_memory()
            summary = summarize(loaded, top=stored.SUMMARY_TOP)
            # kept for `dsprof summary RUN`, which then reads it (dsprof/reports/stored.py)
            stored.save_report(loaded.path, "summary", stored.summary_params(),
                               summary.to_json())
            findings = analyze(loaded)
            postmortem = _postmortem(loaded)
    except DsprofError as exc:
        logger.error("could not analyze the run: %s", exc)
        return
    except KeyboardInterrupt:
        logger.warning("analysis interrupted; the raw data is saved: `dsprof summary %s` "
                       "analyzes it later", run.path)
        return
    except OSError as exc:  # a full disk or a file size limit while writing the tables
        logger.error("could not write the analysis into %s: %s; the raw data is kept",
                     run.path, exc.strerror or exc)
        return
    except Exception as exc:  # noqa: BLE001 - the script's exit status must survive our bugs
        logger.exception("analysis failed (the raw data is kept in %s): %s", run.path, exc)
        return
    if quiet:
        return

    def render(console: Any) -> None:
        render_short(summary, console, str(run.shown), findings)
        if postmortem is not None:
            from dsprof.render.memory import render_oom_short

            render_oom_short(postmortem, console)
            console.print(f"saved to {esc(run.shown / 'oom.json')}; more: "
                          f"[bold]dsprof memory {esc(run.shown)}[/]", soft_wrap=True)

    last_words.say(terminal, render, last)


def _postmortem(loaded: Any) -> Any:
    """"What filled memory" when the script died out of memory (None otherwise)."""
    from dsprof.reports.memory import write_postmortem

    try:
        return write_postmortem(loaded)
    except DsprofError as exc:
        logger.warning("no out-of-memory post-mortem: %s", exc)
        return None
