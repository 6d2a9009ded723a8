"""One run as the pages see it: its tables, the analyzers' results, and what is missing.

Everything a page shows comes from here: the tables (through DuckDB), ``summarize`` (the
analyzer behind ``dsprof summary``), findings.json, and the timeline index. Results are
computed once and kept. DuckDB connections are not safe to share between threads and the
server answers requests on several, so every query goes through one lock per run.
"""

from __future__ import annotations

import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dsprof.analyzers.registry import Analysis, read_findings
from dsprof.dashboard.duck import arrow
from dsprof.dashboard.memseries import DeviceSeries, load_memory
from dsprof.dashboard.timeline import TimelineIndex
from dsprof.dashboard.timeline_load import load_timeline
from dsprof.errors import RunDirError
from dsprof.findings import Finding
from dsprof.log import logger
from dsprof.metrics.step_breakdown import StepBreakdown, step_breakdown
from dsprof.reports.gpu import GpuReport, gpu_report
from dsprof.reports.summary import RunSummary, summarize
from dsprof.run import Run, load
from dsprof.sqlsafe import table_columns

# What each table holds and the command that collects it, for pages that find it missing.
COLLECTED_BY: dict[str, str] = {
    "steps": "step times: `dsprof run SCRIPT` (optimizer steps or dsprof.step()), or "
             "`dsprof import` of a trace with ProfilerStep annotations",
    "ops": "host ops: `dsprof run SCRIPT` records them in its profiler windows; "
           "`dsprof import TRACE` reads them from a torch.profiler trace",
    "kernels": "GPU kernels: `dsprof run SCRIPT` on a GPU, or `dsprof import` of a trace "
               "recorded on a GPU",
    "memory": "allocator events: `dsprof run SCRIPT` (recorded in its profiler windows), or "
              "`dsprof import` of a trace recorded with profile_memory=True",
    "modules": "per-module parameters and activations: `dsprof run SCRIPT` "
               "(the module collector)",
    "stacks": "allocation sites: `dsprof run SCRIPT` (the memory collector's stacks)",
    "comms": "collectives: `dsprof run` (or torchrun) on a torch.distributed script, or "
             "`dsprof import` of a distributed trace",
    "device_samples": "GPU utilization and power: `dsprof run SCRIPT` on a GPU with "
                      "`pip install dsprof[gpu]`",
}


class RunSource:
    """A run opened for the dashboard (read only).

    Args:
        path: the run directory.
        label: how pages name it ("A", "B").
    """

    def __init__(self, path: str | Path, label: str = "A"):
        self.run: Run = load(path)
        self.label = label
        self.path = self.run.path
        self.lock = threading.RLock()
        self._timeline_lock = threading.Lock()
        self._timeline: TimelineIndex | None = None
        self._summary_lock = threading.Lock()
        self._summary: RunSummary | None = None
        self._gpu: GpuReport | None = None
        self._breakdown: StepBreakdown | None = None
        self._warm_thread: threading.Thread | None = None
        self.findings_error: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def has(self, table: str) -> bool:
        return self.run.has(table)

    def missing(self, table: str) -> str:
        """The sentence a page shows when ``table`` is absent."""
        if table == "findings" and self.analysis is None and self.findings_error:
            return f"findings.json cannot be read: {self.findings_error}"
        if table == "findings":
            return ("This run was never analyzed (no findings.json): `dsprof analyze RUN` "
                    "runs the analyzers and writes it.")
        how = COLLECTED_BY.get(table, "")
        return f"This run has no {table} table. {how[:1].upper()}{how[1:]}".strip()

    def columns(self, table: str) -> set[str]:
        with self.lock:
            return table_columns(self.run, table)

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.run.sql(query, params)

    def arrow(self, query: str, params: list[Any] | None = None) -> pa.Table:
        with self.lock:
            return arrow(self.run, query, params)

    @property
    def gpu(self) -> GpuReport:
        """``dsprof gpu``'s facts (kernel categories, Tensor Core share, MFU, samples)."""
        with self._summary_lock:
            if self._gpu is None:
                with self.lock:
                    self._gpu = gpu_report(self.run)
            return self._gpu

    @property
    def summary(self) -> RunSummary:
        with self._summary_lock:
            if self._summary is None:
                with self.lock:
                    self._summary = summarize(self.run)
            return self._summary

    @property
    def step_breakdown(self) -> StepBreakdown:
        """The Overview's per-step breakdown (``dsprof.metrics.step_breakdown``)."""
        with self._summary_lock:
            if self._breakdown is None:
                with self.lock:
                    self._breakdown = step_breakdown(self.run)
            return self._breakdown

    @cached_property
    def analysis(self) -> Analysis | None:
        try:
            return read_findings(self.run)
        except RunDirError as exc:  # shown on the Findings page instead of a 500
            self.findings_error = str(exc)
            return None

    @property
    def findings(self) -> list[Finding]:
        return list(self.analysis.findings) if self.analysis else []

    def finding(self, finding_id: str) -> Finding | None:
        return next((f for f in self.findings if f.id == finding_id), None)

    @property
    def timeline(self) -> TimelineIndex:
        """The run's spans; built once (seconds at 10 M spans), other requests wait for it."""
        with self._timeline_lock:
            if self._timeline is None:
                with self.lock:
                    self._timeline = load_timeline(self.run)
            return self._timeline

    def warm(self) -> threading.Thread:
        """Build the timeline, the summary and the step breakdown in the background, so the
        first visit to a page of a big run does not wait for them."""
        def work() -> None:
            try:
                self.timeline.window()  # builds and caches the index and the first view
                # what the Timeline page reads, before the long jobs that hold the
                # connection's lock: its first visit never waits for them
                self.memory_series  # noqa: B018
                self.profiled_window  # noqa: B018
                self.opening_timeline  # noqa: B018
                self.summary  # noqa: B018
                self.step_breakdown  # noqa: B018
            except Exception:  # noqa: BLE001 - the page that needs it will report the error
                logger.debug("background load of %s failed", self.path, exc_info=True)

        thread = threading.Thread(target=work, daemon=True, name="dsprof-dashboard-warm")
        thread.start()
        self._warm_thread = thread
        return thread

    @cached_property
    def profiled_window(self) -> tuple[int | None, int | None]:
        """The profiled steps (ns since the timeline's t0, padded by a tenth): where the
        Timeline opens; (None, None) for the whole run. See ``pages.timeline``."""
        from dsprof.dashboard.pages.timeline import profiled_window

        return profiled_window(self)

    @cached_property
    def opening_timeline(self) -> Any:
        """The figure the Timeline page opens with when its address names nothing (the
        profiled window): ~0.1 s of plotly figure building, done before the first visit.
        Never changed after (pages send it as it is; updates come as new figures)."""
        from dsprof.dashboard.pages.timeline import view_figure

        x0, x1 = self.profiled_window
        return view_figure(self, x0, x1, np.zeros(0, np.int64))

    @cached_property
    def memory_series(self) -> list[DeviceSeries]:
        t0 = self.timeline.t0_ns if len(self.timeline) else None
        with self.lock:
            return load_memory(self.run, t0)

    def close(self) -> None:
        """Wait for the background load (a process that exits while DuckDB runs in another
        thread aborts), then close the connection."""
        if self._warm_thread is not None:
            if self._warm_thread.is_alive():
                self.run.con.interrupt()  # stop a long scan now rather than wait for it
            self._warm_thread.join()
        with self.lock:
            self.run.close()
