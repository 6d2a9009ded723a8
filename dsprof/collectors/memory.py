"""The memory collector: what is alive, what it is, and the allocator's own record.

Per profiler window (the timeline collector's; the profiler's ``[memory]`` events are the
allocation record on every device):

* at the window's first boundary, a census of the storages already alive (parameters,
  gradients, optimizer state, tensors the loop holds), each watched by a weak reference so its
  free is timed even on CPU, where the profiler does not report frees of blocks it did not see
  allocated;
* at every boundary inside the window, a census of parameters, gradients and optimizer state
  (what the window's allocations became) and of variables holding an autograd graph;
* saved-for-backward tensors and the model's inputs (:mod:`dsprof.collectors.activations`);
* on CUDA, ``_record_memory_history`` during the window and its snapshot at the end.

All of it goes to ``raw/rank<R>/window-<K>.census`` (JSON) next to the window's trace; ingest
joins the two. For the whole run, on an accelerator, ``memory_stats()`` at every boundary goes
to ``raw/rank<R>/allocator.jsonl``, and an out-of-memory error dumps ``oom.snapshot.pickle``.

``--memory-budget`` is enforced from the window's memory events when the window closes: over
budget, the collector raises :class:`~dsprof.errors.MemoryBudgetExceeded` into the script, as a
real out-of-memory error would be, so the post-mortem is testable on any machine.
"""

from __future__ import annotations

import functools
import pickle
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from dsprof.collectors import script_signals
from dsprof.collectors.activations import ActivationTracker
from dsprof.collectors.cuda_start import when_cuda_starts
from dsprof.collectors.device import Device
from dsprof.collectors.memory_census import Census, take_census
from dsprof.errors import MemoryBudgetExceeded
from dsprof.frames import raised_in_signal_handler, shown_path
from dsprof.log import logger
from dsprof.rundir import atomic_write_bytes

HISTORY_ENTRIES = 200_000  # allocator actions kept per window on CUDA (a ring buffer)
OOM_SNAPSHOT = "oom.snapshot.pickle"
ALLOCATOR_FILE = "allocator.jsonl"
CENSUS_SUFFIX = ".census"


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    """A failing memory collector logs once and turns itself off; the script and the other
    collectors go on."""

    @functools.wraps(method)
    def wrapper(self: MemoryCollector, *args: Any, **kwargs: Any) -> None:
        if self.off:
            return
        try:
            method(self, *args, **kwargs)
        except Exception as exc:  # a collector must not fail the script
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            self.off = True
            self.tracker.uninstall()
            logger.error("memory collector failed and is off for the rest of the run: %s: %s",
                         type(exc).__name__, exc, exc_info=True)

    return wrapper


class MemoryCollector:
    """Args:
        device: the rank's device.
        raw_dir: ``raw/rank<R>/``.
        clock: the run clock (ns).
        budget: ``--memory-budget`` in bytes, or None.
    """

    def __init__(self, device: Device, raw_dir: Path, clock: Callable[[], int],
                 budget: int | None = None):
        self.device = device
        self.raw_dir = raw_dir
        self.clock = clock
        self.budget = budget
        self.tracker = ActivationTracker(clock)
        self.activations = True  # off once torch.compile is in use
        self._window: int | None = None
        self._steps: list[int] = []
        self._baseline: Census | None = None
        self._deaths: dict[tuple[str, int], int] = {}
        self._watch: dict[tuple[str, int], weakref.ref[Any]] = {}
        self._boundaries: list[dict[str, Any]] = []
        self._holders: list[list[Any]] = []
        self._start_ns = 0
        self._stats: list[bytes] = []
        self._oom_dumped = False
        self._history = False  # dsprof records the allocator's history in this window
        self.exceeded: MemoryBudgetExceeded | None = None
        self.off = False
        self.last_window: tuple[Path, dict[str, Any]] | None = None

    # -- session hooks --------------------------------------------------------------------
    @_guarded
    def install(self) -> None:
        if self.device.on_out_of_memory(self._dump_oom_snapshot):
            logger.debug("memory: out-of-memory observer attached as CUDA starts")
        if self.device.is_accelerator:
            when_cuda_starts(self._cuda_started)

    def _cuda_started(self) -> None:
        """Inside the script's CUDA initialisation: a window that opened before it records
        the allocator from the first allocation on (window_started could not start it)."""
        if self._window is not None and not self.off:
            self._history = self.device.start_memory_history(HISTORY_ENTRIES,
                                                             cuda_starting=True)

    @_guarded
    def window_started(self, window: int, step: int) -> None:
        """A profiler window starts recording ``step``."""
        self._window, self._steps = window, [step]
        self._start_ns = self.clock()
        census = take_census(self._start_ns, sys._getframe(1))
        self._watch_baseline(census)
        self._baseline = census
        self._boundaries, self._holders = [], []
        self.tracker.reset()
        if self.activations:
            self.tracker.install(step, _param_keys(census))
        self._history = self.device.start_memory_history(HISTORY_ENTRIES)
        logger.debug("memory: window %d baseline %s", window, census.by_category())

    def disable_activations(self) -> None:
        """torch.compile is in use: no saved-tensor or module hooks from here on (see
        collectors/compile_watch.py)."""
        self.activations = False
        self.tracker.uninstall()

    @_guarded
    def window_step_ended(self, step: int, continues: bool) -> None:
        """Step ``step`` ended inside the window; ``continues``: the next step is recorded too."""
        if self._window is None:
            return
        census = take_census(self.clock(), sys._getframe(1), holders=True)
        census.release()
        self._boundaries.append({
            "step": step, "ts_ns": census.ts_ns,
            "keys": [[d, p, n, c] for (d, p), (n, c, _) in census.entries.items()
                     if c in ("parameter", "gradient", "optimizer_state")]})
        for h in census.holders:
            self._holders.append([step, h.name, h.function, h.filename, h.firstlineno,
                                  h.graph_nodes])
        if continues:
            self._steps.append(step + 1)
            self.tracker.set_step(step + 1, _param_keys(census))

    @_guarded
    def window_stopped(self, trace_file: str | None) -> None:
        """The window closed; its trace (if saved) is ``trace_file``. Writes the census and
        checks the budget: over it, :attr:`exceeded` is set and the session raises it into the
        script once the timeline is done with the boundary."""
        if self._window is None:
            return
        window = self._window
        self._window = None
        self.tracker.uninstall()
        # without dsprof's own recording (the script records its own, or CUDA started only
        # after the window) the window's memory comes from the profiler's events
        snapshot = self._save_snapshot(window) if self._history else None
        self.device.stop_memory_history()
        self._history = False
        if trace_file is None:  # the window was dropped (the bootstrap capture)
            self._forget()
            return
        doc = self._census_doc(window, trace_file, snapshot)
        path = self.raw_dir / f"window-{window}{CENSUS_SUFFIX}"
        atomic_write_bytes(path, orjson.dumps(doc))
        self._forget()
        self.last_window = (self.raw_dir / trace_file, doc)
        logger.debug("memory: window %d census: %d baseline storages, %d saved tensors", window,
                     len(doc["baseline"]), len(doc["saved"]))
        if self.budget is not None:
            self._check_budget(doc, trace_file)

    @_guarded
    def on_step(self, step: int, ts_ns: int) -> None:
        """Every boundary of the run: the accelerator's counters (cheap)."""
        stats = self.device.memory_stats()
        if stats is not None:
            self._stats.append(orjson.dumps({"step": step, "ts_ns": ts_ns,
                                             "device": self._device_label(), **stats}))

    @_guarded
    def finish(self) -> None:
        if self._stats:
            atomic_write_bytes(self.raw_dir / ALLOCATOR_FILE, b"\n".join(self._stats) + b"\n")

    # -- internals ------------------------------------------------------------------------
    def _device_label(self) -> str:
        """The device the script trains on now, as torch names it."""
        if not self.device.is_accelerator:
            return "cpu"
        index = self.device.current_index()
        return f"cuda:{0 if index is None else index}"

    def _watch_baseline(self, census: Census) -> None:
        self._deaths, self._watch = {}, {}
        deaths, clock = self._deaths, self.clock

        def died(key: tuple[str, int]) -> Callable[[Any], None]:
            def record(_ref: Any) -> None:
                deaths.setdefault(key, clock())

            # a weakref callback drops what is raised in it: the script's signal handlers
            # wait while it runs (a time limit's error was lost here)
            script_signals.defer_in(record.__code__)
            return record

        for key, st in census.storages.items():
            try:
                self._watch[key] = weakref.ref(st, died(key))
            except TypeError:
                pass
        census.release()

    def _forget(self) -> None:
        self._watch, self._baseline = {}, None
        self.tracker.reset()

    def _census_doc(self, window: int, trace_file: str, snapshot: str | None) -> dict[str, Any]:
        base = self._baseline
        t = self.tracker
        sites = sorted((sid, [[shown_path(f[0]), *f[1:]] for f in frames])
                       for frames, sid in t.sites.items())
        return {
            "window": window,
            "trace": trace_file,
            "snapshot": snapshot,
            "device": self._device_label(),
            "start_ns": self._start_ns,
            "end_ns": self.clock(),
            "steps": self._steps,
            "baseline": [[d, p, n, c, name, self._deaths.get((d, p))]
                         for (d, p), (n, c, name) in (base.entries.items() if base else [])],
            "boundaries": self._boundaries,
            "saved": [list(r) for r in t.saved],
            "inputs": [list(r) for r in t.inputs],
            "calls": [[s, name, n] for (s, name), n in t.calls.items()],
            "modules": [[name, *info] for name, info in t.modules.items()],
            "sites": sites,
            "holders": [h[:3] + list(assignment_site(h[3], h[4], h[2], h[1])) + h[5:]
                        for h in self._holders],
        }

    def _save_snapshot(self, window: int) -> str | None:
        try:
            snap = self.device.memory_snapshot()
        except Exception as exc:
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            logger.warning("memory: no CUDA snapshot for window %d: %s", window, exc)
            return None
        if snap is None:
            return None
        name = f"window-{window}.snapshot.pickle"
        atomic_write_bytes(self.raw_dir / name, pickle.dumps(snap, protocol=4))
        return name

    def _dump_oom_snapshot(self) -> None:
        if self._oom_dumped:
            return
        self._oom_dumped = True
        try:
            snap = self.device.memory_snapshot()
            atomic_write_bytes(self.raw_dir / OOM_SNAPSHOT, pickle.dumps(snap, protocol=4))
            logger.warning("out of memory: allocator snapshot saved to %s",
                           self.raw_dir / OOM_SNAPSHOT)
        except Exception as exc:  # we are inside the allocator's OOM path
            if raised_in_signal_handler(exc):
                raise  # the script's own signal handler's: it is the script's
            logger.error("out of memory: could not save the allocator snapshot: %s", exc)

    def _check_budget(self, doc: dict[str, Any], trace_file: str) -> None:
        from dsprof.ingest.memory_window import window_peak

        peak, _ = window_peak(self.raw_dir / trace_file, doc)
        if peak > self.budget:
            self.exceeded = MemoryBudgetExceeded(peak, self.budget, doc["steps"])
            logger.error("%s", self.exceeded)


def _param_keys(census: Census) -> set[tuple[str, int]]:
    return {k for k, (_, cat, _) in census.entries.items() if cat == "parameter"}


@functools.lru_cache(maxsize=256)
def assignment_site(filename: str, firstlineno: int, function: str,
                    name: str) -> tuple[str, str | None]:
    """``(file:line, statement)`` of the statement that builds up ``name`` in ``function``: an
    augmented assignment (``total += loss``) or one that reads the name it assigns
    (``total = total + loss``); else the function's first line and None."""
    import ast

    base = name.split("[", 1)[0]
    attr = base.split(".")[-1]
    try:
        with open(filename, encoding="utf-8") as fh:
            source = fh.read()
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return f"{filename}:{firstlineno}", None
    scope: ast.AST = tree
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function \
                and node.lineno <= firstlineno <= (node.end_lineno or node.lineno):
            scope = node
            break

    def names(target: ast.AST) -> bool:
        return (isinstance(target, ast.Name) and target.id == attr) or \
            (isinstance(target, ast.Attribute) and target.attr == attr)

    def plain(value: ast.AST) -> bool:
        """A value that cannot carry a graph: ``x.item()``, ``x.detach()``, ``float(x)``..."""
        if not isinstance(value, ast.Call):
            return False
        f = value.func
        return (isinstance(f, ast.Attribute) and f.attr in ("item", "detach", "tolist")) or \
            (isinstance(f, ast.Name) and f.id in ("float", "int"))

    candidates = sorted(
        (node for node in ast.walk(scope)
         if (isinstance(node, ast.AugAssign) and names(node.target))
         or (isinstance(node, ast.Assign) and any(names(t) for t in node.targets)
             and any(names(n) for n in ast.walk(node.value)))),
        key=lambda n: (not isinstance(n, ast.AugAssign), n.lineno))
    best = next((n for n in candidates if not plain(n.value)), None)
    if best is None:
        return f"{filename}:{firstlineno}", None
    return f"{filename}:{best.lineno}", ast.get_source_segment(source, best)

