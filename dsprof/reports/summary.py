"""Where the time and memory of a run went: the facts behind ``dsprof summary``.

Reads tables only (SQL over DuckDB views plus a little numpy), so it runs the same on a
``dsprof run`` and on a trace imported from a GPU cluster.

* Step time: every recorded step. For a ``dsprof run``, step 0 (script setup plus the first
  iteration) is left out of the statistics and reported apart. Outliers are steps slower than
  median + 3 robust standard deviations (1.4826 x MAD) and at least 20 % above the median.
* Time by phase, over the profiled steps: the spans where a phase begins (an op whose parent
  has another phase or none), swept over time on all threads; an instant where several phases
  run goes to the first of backward, forward, optimizer, data, other, so the phases add up to
  the profiled wall time; what no op covers is ``untraced`` (Python between ops, waiting).
* Top ops by self time: ``cpu_op`` rows inside profiled steps (all rows when the trace has no
  steps).
* GPU kernel types: HTA's interval-merged breakdown (see gpu_breakdown.py), all kernels and
  HTA's default of dropping the last step's launches.
* Peak memory per device, from the ``memory`` table and the per-step allocator peaks.

Phases, top ops and kernel types read the per-rank aggregates written at ingest
(``Run.aggregate``), so a summary of an ingested run does not rescan ops or kernels.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from dsprof.facts import OTHER_LOOP
from dsprof.ingest.aggregates import AGGREGATE_TABLES
from dsprof.late_variables import describe
from dsprof.metrics.gpu.breakdown import run_kernel_type_breakdown, run_temporal_breakdown
from dsprof.metrics.noise import has_column
from dsprof.reports.comms_summary import comms_summary
from dsprof.reports.full_speed_phases import full_speed_phases
from dsprof.reports.loop_notes import step_notes
from dsprof.reports.python_child_note import python_child_notes
from dsprof.reports.summary_data import (
    LoopStats,
    MemoryPeak,
    OpTime,
    PhaseTime,
    RunSummary,
    StepStats,
)
from dsprof.run import Run
from dsprof.vocabulary import EARLIER_LOOP, PHASES, SETUP, SETUP_DIR

# the report's types live in summary_data (no numpy, no run layer), so that rendering a stored
# summary imports neither; importers of this module keep finding them here
__all__ = ["MemoryPeak", "OpTime", "PhaseTime", "RunSummary", "StepStats", "ingest_notes_text",
           "summarize"]


def ingest_notes_text(meta: dict[str, Any]) -> list[str]:
    """meta.json's ``ingest_notes`` (what ingest could not derive per event) as sentences."""
    unknown = (meta.get("ingest_notes") or {}).get("flops_unknown") or {}
    kinds = unknown.get("kinds") or {}
    if not isinstance(kinds, dict) or not kinds:
        return []
    top = sorted(kinds.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))[:3]
    return [f"FLOPs unknown for {int(unknown.get('ops') or 0)} ops of {len(kinds)} kinds ("
            + ", ".join(f"{name} x{count}" for name, count in top)
            + (", ..." if len(kinds) > 3 else "")
            + "): the trace has no shapes for them (record_shapes=False) or arguments in a "
              "layout dsprof does not know; FLOP totals leave them out"]


def summarize(run: Run, top: int = 15) -> RunSummary:
    notes: list[str] = []
    facts = _facts(run)
    # a script that never imported torch: its one step is dsprof's own start after the script
    steps = None if run.meta.get("script_imported_torch") is False else _step_stats(run)
    if run.meta.get("source") == "run" and run.meta.get("status") == "running" and \
            run.meta.get("coordinator_lost"):
        how = ("each failed rank's line below says how it ended"
               if run.meta.get("rank_failures") else "each rank's own record says it finished")
        notes.append("the run did not finish: the process that coordinated its ranks ended "
                     "without recording the job's end (killed, e.g. by the OOM killer); the "
                     f"ranks' own records were merged when the run was first read, and {how}")
    elif run.meta.get("source") == "run" and run.meta.get("status") == "running":
        notes.append("the run did not finish (the process was killed, e.g. by the OOM killer, "
                     "or is still running): this is what was saved up to its last closed "
                     "profiler window, without the per-step timings of the whole run")
    elif run.meta.get("source") == "run":
        src = run.meta.get("steps_source", "none")
        if not run.has("steps"):
            notes.append("the run directory has no steps table (a dsprof run always writes "
                         "one: the directory is incomplete): no step time, and nothing per "
                         "step")
        elif run.meta.get("script_imported_torch") is False:
            notes.append("the script never imported torch, so there was nothing to profile: "
                         "dsprof starts when the script imports torch; the run's one step, "
                         "dsprof's own start after the script had ended, has no step time")
        elif src == "none":
            cap = _cap_setting(run, "max_capture_s")
            capped = " and hit the cap" if run.meta.get("capped") else ""
            if run.meta.get("capped") and run.meta.get("capped_by") == "memory":
                # the capture stops before the profiler's memory makes it dear to stop
                capped = (f", but stopped earlier: the process's heap grew "
                          f"{_cap_setting(run, 'max_capture_mb')} MiB while the profiler kept "
                          "every op (--max-capture-mb)")
            children = _started_processes(run.meta.get("child_processes"))
            notes.append(
                (f"no step boundaries were seen in the profiled process (no optimizer.step(), "
                 f"no backward(), no dsprof.step() there): the whole run was captured as one "
                 f"step, up to {cap} s{capped}. It started {children}, which dsprof does not "
                 "follow: if they trained (Hogwild), start them with torch.multiprocessing."
                 "spawn, whose processes dsprof profiles as ranks, or run the training "
                 "function in the main process for the profile") if children else
                (f"no step boundaries were seen (no optimizer.step(), no backward(), "
                 f"no dsprof.step()): the whole run was captured as one step, up to "
                 f"{cap} s{capped}"))
        elif src == "backward":
            calls = (f"{run.meta.get('backward_calls')} backward() calls"
                     if run.meta.get("backward_calls") or not run.meta.get("grad_calls") else
                     f"{run.meta.get('grad_calls')} torch.autograd.grad calls (torch.func.grad "
                     "makes them too; the run called no backward())")
            notes.append(f"no optimizer step was seen (none, or one inside a torch.compile'd "
                         f"function): each of the {calls} ended a step (an update after it is "
                         "timed in the next step; call dsprof.step() to mark steps yourself)")
        # the training ran in a Python child the script started (python_child_note.py)
        notes.extend(python_child_notes(run.meta, run.manifest.target))
        if run.has("steps") and src != "none":
            notes.extend(step_notes(run))
            notes.extend(_setup_capture_note(run))
        comp = run.meta.get("compile")
        if comp:
            notes.append(f"torch.compile compiled {comp.get('compilations')} time(s), "
                         f"{comp.get('total_s')} s in all: steps that compiled are compile time, "
                         "left out of step statistics; module names and activation charges "
                         "are off under torch.compile")
    for rank, why in sorted((run.meta.get("rank_failures") or {}).items(),
                            key=lambda kv: int(kv[0])):
        notes.append(f"partial run: rank {rank} {why}")
    group = run.meta.get("group_unprofiled")
    if isinstance(group, dict) and isinstance(group.get("world_size"), int):
        size, rank = group["world_size"], group.get("rank")
        notes.append(f"the script's process group has {size} ranks and dsprof profiled this "
                     f"process only (rank {rank if isinstance(rank, int) else '?'}): the others "
                     "were started by the script itself (Lightning's strategy=\"ddp\" runs the "
                     "script again per rank), which dsprof does not follow. Profile every "
                     f"rank: dsprof run --nproc-per-node {size} SCRIPT (Lightning takes its "
                     "ranks from that environment)")
    for spawn in run.meta.get("spawned_unprofiled") or []:
        notes.append(f"the script started {spawn.get('nprocs')} processes through "
                     f"torch.multiprocessing (start_method={spawn.get('start_method')!r}) that "
                     f"dsprof did not profile: {spawn.get('why')}")
    notes.extend(describe(item) for item in run.meta.get("late_environment") or []
                 if isinstance(item, dict))
    notes.extend(ingest_notes_text(run.meta))
    profiled = _profiled_step_count(run)
    phases, profiled_ms = _phase_times(run)
    kt, kt_hta, temporal = [], [], []
    if run.has("kernels") and run.has("ops"):
        kt = [asdict(s) for s in run_kernel_type_breakdown(run, include_last_step=True)]
        kt_hta = [asdict(s) for s in run_kernel_type_breakdown(run, include_last_step=False)]
        temporal = [asdict(t) for t in run_temporal_breakdown(run, include_last_step=True)]
    full_speed, timed = full_speed_phases(run)
    return RunSummary(facts, steps, profiled, phases, profiled_ms, _top_ops(run, top), kt,
                      kt_hta, temporal, _memory_peaks(run), notes, comms_summary(run),
                      _loops(run), full_speed, timed)


def _loops(run: Run) -> list[LoopStats]:
    """Each loop's step time (``run.facts.loops``): a sweep's configurations side by side."""
    out = []
    for loop in run.facts.loops:
        st = loop.step
        out.append(LoopStats(loop.loop, loop.first_step, loop.last_step, loop.source,
                             loop.recorded, st.steps, st.rule if st.steps else "",
                             _ms(st.median_s), _ms(st.mean_s),
                             min(st.durations_ns) / 1e6 if st.counted else None,
                             st.samples_per_s))
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _setup_capture_note(run: Run) -> list[str]:
    """Where the capture of step 0 went when a cap stopped it before the first step and the
    run's steps had a window of their own (collectors/window_files.py)."""
    aside = [w for w in run.meta.get("windows") or []
             if isinstance(w, dict) and w.get("kind") == SETUP]
    if not aside:
        return []
    why = (f"the process's heap grew {_cap_setting(run, 'max_capture_mb')} MiB while the "
           "profiler kept every op (--max-capture-mb)" if aside[0].get("capped_by") == "memory"
           else f"{_cap_setting(run, 'max_capture_s')} s passed (--max-capture)")
    ranks = sorted({int(r) for (r,) in run.sql("SELECT DISTINCT rank FROM steps")})
    rank = f"rank{ranks[0]}" if len(ranks) == 1 else "rank<N>"
    return [(f"the capture from the script's import of torch to its first step stopped before "
            f"that step, when {why}: it holds the setup, not training, and was set aside so "
            f"that profiled steps and op-level findings are the steps' own (dsprof import -o "
            f"NEW_RUN {run.path / 'raw' / rank / SETUP_DIR} analyses it)")]


def _cap_setting(run: Run, key: str) -> Any:
    """A capture cap the run had: meta.json's own key (a ``dsprof run``'s exit writes it), else
    its ``settings`` (what every rank's session starts with; a merge of ranks keeps those)."""
    value = run.meta.get(key)
    if value is None:
        settings = run.meta.get("settings")
        value = settings.get(key) if isinstance(settings, dict) else None
    return value


def _started_processes(entries: Any) -> str:
    """meta.json ``child_processes`` in words ("2 processes with multiprocessing (2 x
    __main__.train, start method fork)"), or "" when there are none or they cannot be read."""
    if not isinstance(entries, list):
        return ""
    rows = [e for e in entries if isinstance(e, dict) and isinstance(e.get("count"), int)]
    total = sum(e["count"] for e in rows)
    if not total:
        return ""
    kinds = "; ".join(f"{e['count']} x {str(e.get('target'))[:120]}, start method "
                      f"{str(e.get('start_method'))[:20]}" for e in rows[:4])
    more = f"; and {len(rows) - 4} other targets" if len(rows) > 4 else ""
    return (f"{total} process{'es' if total > 1 else ''} with multiprocessing ({kinds}{more})")


def _facts(run: Run) -> dict[str, Any]:
    m, manifest = run.meta, run.manifest
    device_names = sorted({d.name or "?" for d in manifest.devices}
                          | set(manifest.trace_device_names))
    facts: dict[str, Any] = {
        "run": str(run.path),
        "source": manifest.source,
        "target": " ".join(manifest.target.argv) if manifest.target else None,
        "inputs": m.get("inputs"),
        "status": m.get("status"),
        "exit_status": m.get("exit_status"),
        "exit_reason": m.get("exit_reason"),
        "exit_error": m.get("exit_error"),
        "torch": m.get("torch_version"),
        "devices": device_names or None,
        "ranks": m.get("ranks"),
        "world_size": m.get("world_size"),
        "steps_source": m.get("steps_source"),
        # (a forward loop's window set aside is no profile of this run's steps; a null reads
        # as no windows, as every null dsprof leaves in meta.json: meta_types.py)
        "windows": [w.get("steps") for w in m.get("windows") or []
                    if w.get("kind") not in (EARLIER_LOOP, SETUP)] or None,
        "events": m.get("events"),
        "tables": [t for t in run.tables if t not in AGGREGATE_TABLES],
        # the run layer's facts (dsprof/facts.py): what diff, verify and the dashboard show
        "step_median_s": run.facts.step.median_s,
        "step_mean_s": run.facts.step.mean_s,
        "step_rule": run.facts.step.rule if run.facts.step.steps else None,
        "peak_bytes": run.facts.peak_bytes,
        "peak_source": run.facts.peak_source,
    }
    return {k: v for k, v in facts.items() if v is not None}


def _step_stats(run: Run) -> StepStats | None:
    """Statistics over the steps that count (``run.facts``: the rule every command uses)."""
    st = run.facts.step
    if not st.counted:
        return None
    kept = [(s, d / 1e6) for _, s, d in st.counted]
    excluded = [(s, d / 1e6) for _, s, d in st.left_out]
    ms = np.array([d for _, d in kept])
    med = st.median_s * 1e3 if st.median_s is not None else float(np.median(ms))
    mad = float(np.median(np.abs(ms - med))) * 1.4826
    limit = max(med + 3 * mad, med * 1.2)
    slow = [(r, s, d / 1e6) for r, s, d in st.counted if d / 1e6 > limit] \
        if len(kept) >= 5 else []
    per_rank: dict[int, int] = {}
    for r, _, _ in st.counted:
        per_rank[r] = per_rank.get(r, 0) + 1
    return StepStats(len(kept), float(ms.mean()), med, float(np.percentile(ms, 90)),
                     float(ms.min()), float(ms.max()), [(s, d) for _, s, d in slow], excluded,
                     st.rule, ranks=len(per_rank),
                     per_rank=(min(per_rank.values()), max(per_rank.values())),
                     outlier_ranks=[r for r, _, _ in slow], other_loop=_other_loop(run))


def _other_loop(run: Run) -> int:
    if not has_column(run, "steps", "disturbed_by"):
        return 0
    names = ", ".join(f"'{r}'" for r in OTHER_LOOP)  # (constants)
    return int(run.sql(f"SELECT count(*) FROM steps WHERE disturbed_by IN ({names})")[0][0])


def _profiled_step_count(run: Run) -> int:
    if not run.has("steps"):
        return 0
    # steps, not (rank, step) rows: two ranks profiling steps 3-5 profiled three steps
    return int(run.sql("SELECT count(DISTINCT step) FROM steps WHERE profiled")[0][0])


def _phase_times(run: Run) -> tuple[list[PhaseTime], float]:
    if not run.has("ops") or not run.has("steps"):
        return [], 0.0
    total_ns = run.sql("SELECT coalesce(sum(dur_ns), 0) FROM steps WHERE profiled")[0][0]
    if not total_ns:
        return [], 0.0
    # the per-rank priority sweep, done at ingest (dsprof/ingest/aggregates.py)
    owned = dict(run.sql(f"SELECT phase, sum(ns)::BIGINT FROM {run.aggregate('phase_time')} "
                         "GROUP BY phase"))
    if not owned:
        return [], 0.0
    per_phase = [int(owned.get(p) or 0) for p in PHASES]
    covered = sum(per_phase)
    out = [PhaseTime(p, per_phase[k] / 1e6, 100.0 * per_phase[k] / total_ns)
           for k, p in enumerate(PHASES) if per_phase[k]]
    untraced = max(total_ns - covered, 0)
    out.append(PhaseTime("untraced", untraced / 1e6, 100.0 * untraced / total_ns))
    return out, total_ns / 1e6


def _top_ops(run: Run, top: int) -> list[OpTime]:
    if not run.has("ops"):
        return []
    in_steps = run.sql(f"SELECT coalesce(sum(ops_in_steps), 0) "
                       f"FROM {run.aggregate('rank_totals')}")[0][0] > 0
    # cpu_op rows per rank and name, summed at ingest (dsprof/ingest/aggregates.py)
    rel = run.aggregate("op_time")
    where = "in_step" if in_steps else "true"
    total = run.sql(f"SELECT coalesce(sum(self_ns), 0) FROM {rel} WHERE {where}")[0][0]
    if not total:
        return []
    rows = run.sql(f"""
        SELECT name, sum(calls)::BIGINT, sum(self_ns)::BIGINT, sum(dur_ns)::BIGINT
        FROM {rel} WHERE {where}
        GROUP BY name ORDER BY sum(self_ns) DESC, name LIMIT {int(top)}""")
    return [OpTime(n, c, s / 1e6, t / 1e6, 100.0 * s / total) for n, c, s, t in rows]


def _memory_peaks(run: Run) -> list[MemoryPeak]:
    peaks: list[MemoryPeak] = []
    if run.has("memory"):
        rows = run.sql("""
            SELECT rank, device, max(allocated), bool_or(category IS NOT NULL)
            FROM memory GROUP BY rank, device ORDER BY rank, device""")
        for rank, device, peak, has_cat in rows:
            if peak is None:
                continue
            by_cat: dict[str, int] = {}
            if has_cat:
                by_cat = _categories_at_peak(run, rank, device)
            peaks.append(MemoryPeak(rank, device, int(peak),
                                    "timeline" if has_cat else "allocator_total", by_cat,
                                    _memory_window(run, rank, device)))
    if run.has("steps"):
        for rank, dpeak, rss in run.sql("""
                SELECT rank, max(device_peak_bytes), max(rss_bytes) FROM steps
                GROUP BY rank ORDER BY rank"""):
            if dpeak is not None:
                peaks.append(MemoryPeak(rank, "accelerator", int(dpeak), "device_peak"))
            if rss is not None:
                peaks.append(MemoryPeak(rank, "host", int(rss), "rss"))
    return peaks


def _memory_window(run: Run, rank: int, device: str) -> str | None:
    """The steps a rank's memory timeline holds, in words, where they are not all the run's
    steps: a replay buffer or cache that fills after the profiled steps peaks later, so the
    peak must say what it is over."""
    if not run.has("steps"):
        return None
    ((first, last, n),) = run.sql(
        "SELECT min(step), max(step), count(DISTINCT step) FROM memory "
        "WHERE rank = ? AND device = ? AND step IS NOT NULL", [rank, device])
    ((total,),) = run.sql("SELECT count(*) FROM steps WHERE rank = ?", [rank])
    if not n or n >= total:
        return None
    span = f"step {first}" if first == last else f"steps {first}-{last}"
    return (f"{span} of {total}" if n == last - first + 1 else
            f"{n} steps in {first}-{last} of {total}")


def _categories_at_peak(run: Run, rank: int, device: str) -> dict[str, int]:
    """Live bytes per category at the first moment the live total peaks (see memory_report)."""
    from dsprof.reports.memory import device_peak

    peak = device_peak(run, rank, device, top=50)
    if peak is None:
        return {}
    return {h.key: h.bytes for h in peak.by_category if h.bytes}
