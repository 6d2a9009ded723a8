"""Op timeline: torch.profiler (Kineto) driven by a step schedule.

State per step, like ``action_map`` in torch/profiler/profiler.py:

==========  ==========================================================================
bootstrap   step 0, recorded from session start; if a boundary comes, the capture is
            dropped (step 0 mixes setup with the first iteration); if none ever comes, it
            is the whole run, up to ``max_capture_s``. Each ``backward()`` end in it starts
            the next ``ProfilerStep#`` span: a short loop with no optimizer (its backward
            ends become its steps at exit, collectors/steps.py) is then profiled per step.
            Before any ``backward()``, each outermost forward's end starts the next
            ``dsprof.forward_step#`` span instead: renamed ``ProfilerStep#`` at exit if the
            forwards became the steps (an inference loop), ``ProfilerStep#0`` otherwise
none        not profiling (the ``wait`` steps and after the last window)
warmup      Kineto prepared, events not kept
record      recording
record_and_save  the last active step of a window: saved when it ends
==========  ==========================================================================

Steps 1.. follow torch's ``schedule(wait, warmup, active, repeat)`` arithmetic. Saving writes
Kineto's JSON with its own C++ writer; nothing is parsed inside the training loop (the DEBUG
op trace is live, from the dispatch watcher, not from these traces).

Two profiler sessions at once crash torch (exit 139), so when the script starts its own
torch.profiler session (:mod:`dsprof.collectors.user_profiler` tells), the timeline steps
aside: it closes its own window first (saved with the steps it recorded whole; the step in
progress is cut, and a window with no whole step is dropped), takes none while the script's
session lives, resumes the schedule after it, and records in meta.json (``user_profiler``)
that it did, with the steps each of the script's sessions spanned (their times are the
script's profiling: ``disturbed_by = user_profiler``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsprof.collectors.allocator_warning import UnknownFreeProbe
from dsprof.collectors.capture_cap import CaptureCap
from dsprof.collectors.cuda_start import availability_by_nvml
from dsprof.collectors.device import Device, profiler_activities
from dsprof.collectors.inductor_untouched import inductor_not_imported
from dsprof.collectors.kineto_log import quiet_kineto
from dsprof.collectors.modules import ModuleAnnotator
from dsprof.collectors.profiler_release import release_results, save_trace, stop_session
from dsprof.collectors.trace_spans import merge_step_spans, rename_forward_spans
from dsprof.collectors.user_profiler import HandOvers
from dsprof.collectors.window_files import set_aside_earlier_windows, set_aside_setup_capture
from dsprof.collectors.window_schedule import (
    BOOTSTRAP,
    NONE,
    RECORD,
    RECORD_AND_SAVE,
    WARMUP,
    Window,
    WindowListener,
    planned_action,
)
from dsprof.log import logger
from dsprof.settings import Settings
from dsprof.vocabulary import FORWARD_STEP_SPAN


class TimelineCollector:
    def __init__(self, settings: Settings, device: Device, raw_dir: Path,
                 listener: WindowListener | None = None,
                 annotator: ModuleAnnotator | None = None):
        self.settings = settings
        self.device = device
        self.raw_dir = raw_dir
        self.listener = listener
        self.windows: list[Window] = []
        # shared with the step collector's outermost-forward watch: one pair of global hooks
        self.annotator = annotator or ModuleAnnotator()
        self._prof: Any = None
        self._unknown_free: UnknownFreeProbe | None = None  # set by _prepare
        self._state = NONE
        self._step_rf: Any = None
        self._window: Window | None = None
        self._cap: CaptureCap | None = None  # the bootstrap capture's time cap
        self._thread = threading.get_ident()
        # off for good once the program uses torch.compile (collectors/compile_watch.py): the
        # module annotator and the capture-cap hook are global module hooks
        self.module_hooks = True
        # step numbers the schedule counts from: boundaries found after the fact (backward()
        # as the step source, collectors/steps.py) restart it, so its windows still come
        self._schedule_origin = 0
        # called before a profiler session is prepared and after it stopped: whoever else
        # uses CUPTI (the cupti kernel mode) must let go of it in between
        self.before_profiler: Callable[[], None] | None = None
        self.after_profiler: Callable[[], None] | None = None
        self.handed_over = HandOvers()  # the script's own profiler sessions
        self._suspended = False
        self._next_step = 0
        # backward() ends seen during the bootstrap capture (its ProfilerStep spans after #0),
        # and the bootstrap window saved at the capture cap, if it was split so
        self._bootstrap_backwards = 0
        # outermost forward ends seen there before any backward() (dsprof.forward_step spans)
        self._bootstrap_forwards = 0
        self._capped_split: Window | None = None
        # the first step of the run's latest loop, after the first loop (collectors/steps.py)
        self._loop_start: int | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Begin the bootstrap capture of step 0. Without Python stacks: step 0 usually
        includes the script's imports, where the Python tracer would record every function
        call only for the capture to be dropped."""
        self._prepare(with_stack=False)
        self._start_recording(0, Window(0, "unstepped"))
        self._state = BOOTSTRAP
        self._cap = CaptureCap(self.settings.max_capture_s, self._cap_reached, self.module_hooks,
                               int(self.settings.max_capture_mb * 2**20))

    def restart_schedule(self, last_step: int) -> None:
        """Steps up to ``last_step`` were found after the fact: the step after it is the
        schedule's step 1 (``--wait`` counts from there)."""
        self._schedule_origin = last_step

    def new_loop(self, first: int, origin: int) -> None:
        """A loop after another starts at step ``first`` (collectors/steps.py); the step after
        ``origin`` is the schedule's step 1. A window of the loop before it in progress closes
        (saved with its whole steps, as when the script's own profiler starts), so the new
        loop gets windows of its own; once one is saved, the earlier loops' are set aside
        (collectors/window_files.py)."""
        self._loop_start = first
        self._schedule_origin = max(self._schedule_origin, origin)
        if self._suspended:
            return
        state, window = self._state, self._window
        if state in (RECORD, RECORD_AND_SAVE) and window is not None:
            window.steps = [s for s in window.steps if s < first]
            self._stop(save=bool(window.steps))
            self._state = NONE
        elif state == WARMUP:
            self._stop(save=False)
            self._state = NONE

    def disable_module_hooks(self) -> None:
        """torch.compile is in use: no global module hook from here on. The capture cap is
        then checked at each backward() instead (:meth:`poll_cap`)."""
        self.module_hooks = False
        self.annotator.remove()
        if self._cap is not None:
            self._cap.remove(keep_alarm=True)
        logger.debug("timeline: module annotator and capture-cap hook off (torch.compile)")

    def extend_deadline(self, ns: int) -> None:
        """Compilation took ``ns``: it does not count against the capture cap (a long compile
        is not a script without steps)."""
        if self._cap is not None:
            self._cap.extend(ns)

    def poll_cap(self) -> None:
        """The capture-cap check, where no module hook makes it."""
        if self._state == BOOTSTRAP and self._cap is not None:
            self._cap.check()

    def backward_ended(self) -> None:
        """A ``backward()`` returned. In the bootstrap capture it may have ended a step (no
        optimizer: collectors/steps.py decides at 64 backwards or at exit), so the capture's
        step span moves on: ``ProfilerStep#k`` then holds the ops of the step that backward
        end k closes, numbered as the steps will be if backward() becomes their source. If a
        boundary comes instead, the capture and its spans are dropped."""
        if self._state != BOOTSTRAP or self._window is None \
                or threading.get_ident() != self._thread:
            return
        self._end_step_annotation()
        self._bootstrap_backwards += 1
        self._begin_step_annotation(self._bootstrap_backwards)

    def forward_ended(self) -> None:
        """An outermost module call returned, and no ``backward()`` or optimizer step came yet
        (collectors/steps.py decides whether forwards are the steps at 16 of them or at exit).
        In the bootstrap capture the next ``dsprof.forward_step#k`` span starts: the
        ``ProfilerStep#k`` it becomes if they are (:meth:`finish`)."""
        if self._state != BOOTSTRAP or self._window is None or self._bootstrap_backwards \
                or threading.get_ident() != self._thread:
            return
        import torch

        self._end_step_annotation()
        self._bootstrap_forwards += 1
        self._step_rf = torch.autograd.profiler.record_function(
            f"{FORWARD_STEP_SPAN}{self._bootstrap_forwards}")
        self._step_rf.__enter__()

    def on_boundary(self, step: int) -> None:
        """Step ``step`` just ended; move to what the schedule says for ``step + 1``."""
        self._next_step = step + 1
        if self._suspended:
            return  # the script's own profiler records; dsprof's schedule waits
        nxt = planned_action(step + 1 - self._schedule_origin, self.settings)
        state = self._state
        if self.listener is not None and state in (RECORD, RECORD_AND_SAVE):
            self.listener.window_step_ended(step, continues=state == RECORD)
        if state == BOOTSTRAP:
            self._remove_cap()
            self._stop(save=False)
            logger.debug("timeline: step boundary seen, bootstrap capture of step 0 dropped")
        elif state == RECORD:
            self._end_step_annotation()
        elif state == RECORD_AND_SAVE:
            self._stop(save=True)
        elif state == WARMUP and nxt not in (WARMUP, RECORD, RECORD_AND_SAVE):
            self._stop(save=False)
        recording = state == RECORD
        if nxt == WARMUP and self._prof is None:
            self._prepare()
            logger.debug("timeline: warming up at step %d", step + 1)
        elif nxt in (RECORD, RECORD_AND_SAVE):
            if recording:
                self._begin_step_annotation(step + 1)
            else:
                if self._prof is None:
                    self._prepare()
                self._start_recording(step + 1, Window(len(self.windows), "window"))
        self._state = nxt

    def finish(self, backward_steps: int = 0, forward_steps: int = 0) -> None:
        """At exit: save what is being recorded (the unstepped capture included).

        Args:
            backward_steps: how many of the run's first steps ``backward()`` ended (all of
                them when the steps came from backward(), none when an optimizer or
                ``dsprof.step()`` marked them). The bootstrap capture's spans count backward
                ends: they are steps only that far.
            forward_steps: the same for steps that outermost forward calls ended (an
                inference loop whose forwards became its steps at exit).
        """
        self._remove_cap()
        bootstrap = self._window if self._state == BOOTSTRAP else None
        as_steps = forward_steps > 0 and self._bootstrap_forwards > 0
        if bootstrap is not None:
            # the span after the last backward() end closes no step (the update after it and
            # the script's exit): its ops keep their span, the window lists the steps
            bootstrap.steps = [s for s in bootstrap.steps if s < max(backward_steps, 1)]
            if as_steps:
                bootstrap.steps = list(range(min(forward_steps, self._bootstrap_forwards)))
        if self._state in (RECORD, RECORD_AND_SAVE, BOOTSTRAP):
            self._stop(save=True)
        elif self._state == WARMUP:
            self._stop(save=False)
        self._state = NONE
        split = self._capped_split
        for saved in (bootstrap, split):
            if saved is not None and saved.file and self._bootstrap_forwards:
                rename_forward_spans(self.raw_dir / saved.file, as_steps)
        if split is not None and split.file and as_steps:
            split.steps = list(range(min(forward_steps, self._bootstrap_forwards)))
        elif split is not None and split.file and backward_steps < len(split.steps) - 1:
            # capped before the steps' source was known, not backward() after all: the spans
            # were numbered by backward ends, not steps; step 0 holds the capture again
            merge_step_spans(self.raw_dir / split.file)
            split.steps = [0]
            set_aside_setup_capture(self.raw_dir, self.windows)

    # -- the script's own torch.profiler ---------------------------------------------------
    def step_aside(self) -> None:
        """The script starts a torch.profiler session: close dsprof's first (a recording window
        is saved, a warm-up or the bootstrap capture dropped) and take none until it ends."""
        if self._suspended:
            return
        self._suspended, state, window = True, self._state, self._window
        self._remove_cap()
        cut = state in (RECORD, RECORD_AND_SAVE)
        if cut and window is not None and window.steps and window.steps[-1] >= self._next_step:
            # the step in progress is cut short: its ops are a part of a step, not a step
            window.steps.pop()
        if state != NONE:
            self._stop(save=cut and window is not None and bool(window.steps))
        self._state = NONE
        self.handed_over.started(self._next_step, cut)
        logger.info("the script started its own torch.profiler at step %d: dsprof's op "
                    "timeline steps aside until it stops (step timings go on)", self._next_step)

    def resume(self) -> None:
        """The script's profiler session stopped: dsprof's schedule goes on from the next
        boundary. If no window of dsprof's was saved yet (the script's session covered it, or
        cut it before a whole step), the schedule starts over from here: ``--wait`` steps
        on, the window comes after all (unless the script profiles again by then)."""
        self._suspended = False
        if self.settings.repeat > 0 and not any(w.kind == "window" for w in self.windows):
            self._schedule_origin = self._next_step
        # the step it stopped in (often the next one, after ``prof.step()``) wrote its trace
        self.handed_over.stopped(self._next_step)

    def discard(self) -> None:
        """The process hands its profiling over to the ranks it starts (spawned_ranks.py):
        drop what is being recorded, unsaved, and take nothing more."""
        self._suspended = True
        self._remove_cap()
        if self._state != NONE:
            self._stop(save=False)
        self._state = NONE

    def detach_in_child(self) -> None:
        """In a forked child: remove the Python hooks; the profiler object is left as it is
        (stopping or exporting a copy of the parent's session in the child crashes)."""
        self._suspended = True
        self._remove_cap()
        self.annotator.remove()
        self.listener = None
        self._state = NONE

    # -- internals ------------------------------------------------------------------------
    def _prepare(self, with_stack: bool | None = None) -> None:
        from torch.profiler import profile

        if self.before_profiler is not None:
            self.before_profiler()
        from dsprof.collectors.user_profiler import dsprof_profiler

        self._prof = profile(
            activities=profiler_activities(self.device), record_shapes=True, profile_memory=True,
            with_stack=self.settings.with_stack if with_stack is None else with_stack)
        with dsprof_profiler(), availability_by_nvml(), quiet_kineto(), \
                inductor_not_imported(self._prof):  # CUDA's start: the script's
            self._prof.prepare_trace()
        self._unknown_free = UnknownFreeProbe()  # allocated before the recording starts

    def _start_recording(self, step: int, window: Window) -> None:
        self._prof.start_trace()
        if self._unknown_free is not None:  # torch's warning about older blocks: not the script's
            self._unknown_free.absorb()
            self._unknown_free = None
        if self.module_hooks:
            self.annotator.install()
        self._window = window
        if self.listener is not None:
            self.listener.window_started(window.index, step)
        self._begin_step_annotation(step)
        logger.debug("timeline: recording from step %d (window %d)", step, window.index)

    def _begin_step_annotation(self, step: int) -> None:
        import torch

        self._step_rf = torch.autograd.profiler.record_function(f"ProfilerStep#{step}")
        self._step_rf.__enter__()
        if self._window is not None:
            self._window.steps.append(step)

    def _end_step_annotation(self) -> None:
        if self._step_rf is not None:
            self._step_rf.__exit__(None, None, None)
            self._step_rf = None

    def _stop(self, save: bool) -> None:
        prof, window = self._prof, self._window
        self._prof, self._window = None, None
        self.annotator.uninstall()
        if prof is None:
            return
        self._end_step_annotation()
        t0 = time.perf_counter()
        try:
            stop_session(prof, started=window is not None)
        finally:
            if self.after_profiler is not None:
                self.after_profiler()
        if not save or window is None:
            release_results(prof)
            if self.listener is not None:
                self.listener.window_stopped(None)
            return
        path = self.raw_dir / f"window-{window.index}.trace.json"
        try:
            save_trace(prof, path)
        except BaseException:
            if self.listener is not None:
                self.listener.window_stopped(None)
            raise
        window.file = path.name
        self.windows.append(window)
        if self._loop_start is not None:
            set_aside_earlier_windows(self.raw_dir, self.windows, self._loop_start)
        set_aside_setup_capture(self.raw_dir, self.windows, self._capped_split)
        if self.listener is not None:
            self.listener.window_stopped(path.name)
        logger.debug("timeline: window %d (steps %s) saved to %s in %.0f ms", window.index,
                     window.steps, path, (time.perf_counter() - t0) * 1e3)

    def _cap_reached(self) -> None:
        cap = self._cap
        if self._state == BOOTSTRAP and self._window is not None and cap is not None:
            self._window.capped, self._window.capped_by = True, cap.reason
            if self._bootstrap_backwards or self._bootstrap_forwards:
                self._capped_split = self._window
            logger.warning(cap.why())
            self._stop(save=True)
            self._state = NONE

    def _remove_cap(self) -> None:
        if self._cap is not None:
            self._cap.remove()
            self._cap = None
