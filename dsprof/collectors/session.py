"""A profiling session: one per process (rank), owning the collectors and the raw/ folder.

The session starts the collectors, routes step boundaries (optimizer hook or ``dsprof.step()``)
to the timeline, and at the end, whatever the cause (normal exit, ``sys.exit``, exception,
Ctrl-C, out of memory), saves what was collected: the open profiler window, ``session.json``
with every step boundary, and the exit status in ``meta.json``. A collector failure is logged
once and disables that collector; it never fails the user's script, and neither does a file
that cannot be written (a full disk): one line says which, the rest is still saved.

The session owns the run's lock (:mod:`dsprof.runlock`) while the run is written, so other
commands leave the run alone. A process forked by the script is not the session: in the child,
every collector stops at once and the child's exit saves nothing (:mod:`.forked_child`).
Processes the script starts with ``torch.multiprocessing.spawn`` are ranks of the run, and
this session coordinates them (:mod:`.spawned_ranks`; :mod:`.spawn_take_back` if not).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import sys
import threading
from typing import Any

import orjson

from dsprof._version import __version__
from dsprof.apply import AppliedKnobs
from dsprof.apply import from_env as knobs_from_env
from dsprof.apply import install as knobs_install
from dsprof.collectors import (
    child_processes,
    clock,
    exit_guard,
    forked_child,
    memory_history,
    peak_ledger,
    process_groups,
    script_signals,
    session_end,
    spawned_ranks,
)
from dsprof.collectors.bandwidth import measure_host_bandwidth
from dsprof.collectors.compile_watch import CompileWatch
from dsprof.collectors.cuda_start import cuda_driver_initialised
from dsprof.collectors.cupti_kernels import CuptiKernelCollector
from dsprof.collectors.dataloader import DataLoaderCollector
from dsprof.collectors.device import Device, detect, enable_tf32, nvml_bus_id, precision_state
from dsprof.collectors.grad_scaler import GradScalerMonitor
from dsprof.collectors.host_sync import HostSyncCollector
from dsprof.collectors.late_environment import read_at_load
from dsprof.collectors.library_pace import measure_library_pace
from dsprof.collectors.memory import MemoryCollector
from dsprof.collectors.modules import ModuleAnnotator
from dsprof.collectors.process_facts import default_backend as _backend
from dsprof.collectors.process_facts import default_group_rank
from dsprof.collectors.samples import MetricSampler, start_sampler
from dsprof.collectors.side_collectors import start_cupti, start_watcher, watch_user_profiler
from dsprof.collectors.steps import StepCollector
from dsprof.collectors.timeline import TimelineCollector
from dsprof.collectors.user_profiler import UserProfilerGuard
from dsprof.log import logger
from dsprof.ranks import RankEnv, die_with_launcher
from dsprof.rundir import SESSION_FILE, RunDir, atomic_write_bytes
from dsprof.runlock import Progress, RunLock
from dsprof.runlock import acquire as acquire_lock
from dsprof.settings import Settings
from dsprof.speed_env import speed_env

_current: Session | None = None


def current() -> Session | None:
    return _current


class Session:
    """Args:
        settings: the knobs.
        run: the run directory (already created).
        target: what runs, for meta.json (``{"kind": "script"|"module", "name": ..., "argv": [...]}``).
        ranks: this process's place in a multi-rank job (from the environment by default).
            A rank of a multi-rank job leaves meta.json to the coordinator (dsprof/ranks.py)
            and keeps its own facts in ``raw/rank<R>/session.json``.
        lock: the run's lock, when the caller took it already (``dsprof run`` takes it before
            the script runs and starts the session once the script imports torch).
        started_as: ``{"argv", "cwd", "environ", "interpreter_options"}`` as dsprof was started,
            for meta.json and the knobs (default: now, no options: by then ``sys.argv`` is the
            script's), and ``after_script``: True when the script ended without importing torch.
    """

    def __init__(self, settings: Settings, run: RunDir, target: dict[str, Any],
                 ranks: RankEnv | None = None, lock: RunLock | None = None,
                 started_as: dict[str, Any] | None = None):
        self.settings = settings
        self.run = run
        self.target = target
        self.ranks = ranks or RankEnv.from_env()
        self.rank = self.ranks.rank
        self.raw = run.raw_dir(self.rank)
        self.device: Device | None = None
        self.environment_at_load: dict[str, str | None] = {}
        # whether the CUDA driver was initialised when the session had started (None: no
        # NVIDIA driver to ask): the script's own CUDA settings count only where it was not
        self.driver_at_start: bool | None = None
        self.steps: StepCollector | None = None
        self.timeline: TimelineCollector | None = None
        self.memory: MemoryCollector | None = None
        self.knobs: AppliedKnobs | None = None
        self.data: DataLoaderCollector | None = None
        self.syncs: HostSyncCollector | None = None
        self.sampler: MetricSampler | None = None
        self.cupti: CuptiKernelCollector | None = None
        self.scaler: GradScalerMonitor | None = None
        self.compile: CompileWatch | None = None
        self.watcher: Any = None  # DispatchWatcher at DEBUG or with --detect-anomaly
        self.user_profiler: UserProfilerGuard | None = None
        self._finished = False
        self._timeline_ok = True
        self._poll_cap = False  # torch.compile in use: the timeline polls its cap per backward
        self.clock: clock.ClockExchange | None = None  # a rank's offset to rank 0's clock
        self._backend: str | None = None
        self._group_rank: int | None = None  # the script's process group's rank for it
        self.lock: RunLock | None = lock
        self.started_as = started_as or {"argv": list(sys.argv), "cwd": os.getcwd(),
                                         "environ": dict(os.environ)}
        self.progress: Progress | None = None
        self.forked_child = False  # this is a copy of the session in a process the script forked
        self.on_fork_child: list[Any] = []  # more to undo in a forked child (the CLI's SIGTERM)
        self._finish_lock = threading.RLock()  # finish() from the SIGTERM thread or main
        self.pid = os.getpid()
        # the ranks the script started through torch.multiprocessing (spawned_ranks.py):
        # {nprocs, start_method, failures: {index: exit code}, first}; and those not followed
        self.spawned: dict[str, Any] | None = None
        self.spawned_unprofiled: list[dict[str, Any]] = []
        self.successor: Session | None = None  # when they trained nothing: spawn_take_back
        # processes the script starts with multiprocessing itself (child_processes.py)
        self.child_processes: dict[tuple[str, str], int] = {}

    def rank_facts(self, status: str) -> dict[str, Any]:
        """What a rank of a multi-rank job says about itself in session.json."""
        return {"rank": self.rank, "status": status, "pid": os.getpid(),
                "host": socket.gethostname(), "world_size": self.ranks.world_size,
                "device": self.device.to_json() if self.device else None,
                "clock": self.clock.record() if self.clock else None,
                "start_ns": self.steps.start_ns if self.steps else None,
                "backend": self._backend or _backend(), "precision": precision_state(),
                **({"group_rank": self._group_rank} if self._group_rank not in (None, self.rank)
                   else {})}

    def start(self) -> None:
        global _current
        import torch

        if self.ranks.launched:
            die_with_launcher()  # a launcher killed outright takes its ranks with it
        if self.lock is None and (not self.ranks.distributed or self.ranks.coordinator):
            # before meta.json says "running": a reader must never see a run without its writer
            self.lock = acquire_lock(self.run)
        forked_child.register(self)
        script_signals.install()
        self.device = detect()
        if self.device.is_accelerator:
            peak_ledger.install()  # the script's own peak reads stay whole (every step resets)
            memory_history.install()  # and so does its own allocator history
        self.environment_at_load = read_at_load()  # before the script can change it
        environ = self.started_as["environ"]
        self.knobs = knobs_install(knobs_from_env(environ, self.device.kind))
        if self.settings.tf32:
            enable_tf32()
            logger.info("TF32 on for fp32 matmuls and convolutions (DS_ENABLE_TENSOR_CORE)")
        self.data = DataLoaderCollector()
        # one pair of global module hooks: the timeline's module spans and the outermost
        # forward calls that are an inference run's steps (collectors/modules.py)
        modules = ModuleAnnotator()
        self.steps = StepCollector(self.device, self._on_boundary, self.data.take_step, modules)
        self.memory = MemoryCollector(self.device, self.raw, self.steps.now_ns,
                                      self.settings.memory_budget)
        self.timeline = TimelineCollector(self.settings, self.device, self.raw, self.memory,
                                          modules)
        steps = self.steps
        self.syncs = HostSyncCollector(lambda: steps.last_end_ns, steps.step_at)  # at the end
        if self.settings.cupti_kernels:
            self.cupti = start_cupti(self.device, self.raw, steps.now_ns, self.timeline)
        header = {
            "source": "run",
            "status": "running",
            "dsprof_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "target": self.target,
            "dsprof_argv": self.started_as["argv"], "cwd": self.started_as["cwd"],
            "interpreter_options": self.started_as.get("interpreter_options", []),  # verify's
            "settings": self.settings.knobs(),
            "env": {k: v for k, v in environ.items() if k.startswith(("DSPROF_", "DS_"))},
            "speed_env": speed_env(environ),  # given back to verify's reruns
            "devices": {str(self.rank): self.device.to_json()},
            "ranks": [self.rank],
            "world_size": self.ranks.world_size,
            "start_time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "start_ns": self.steps.start_ns,
            "clock": {"kind": "epoch_ns", "rank_offsets_ns": {str(self.rank): 0}},
            "host_bandwidth": measure_host_bandwidth(),
            # CPU runs: the library GELU's rate, which decides its swap's saving there
            **({"library_pace": pace} if self.device.kind == "cpu"
               and (pace := measure_library_pace()) is not None else {}),
            "knobs": self.knobs.report(),
            "precision": precision_state(),
            # dsprof started when the script imported torch; here it never did
            **({"script_imported_torch": False}
               if self.started_as.get("after_script") else {}),
        }
        if not self.ranks.distributed:
            self.run.write_meta(header)
        else:
            if self.ranks.coordinator:
                self.run.write_meta({**header, "launcher": "torchrun", "ranks": []})
            self.clock = clock.ClockExchange(self.rank, self.ranks.world_size,
                                             self.steps.now_ns, self.steps.clock_offset_ns)
            self.clock.start()
            atomic_write_bytes(self.raw / SESSION_FILE, orjson.dumps(self.rank_facts("running")))
        self.progress = Progress(self.raw)
        self.steps.on_late_steps = self.timeline.restart_schedule
        self.steps.on_new_loop = self.timeline.new_loop
        self.steps.after_backward = self._after_backward
        self.steps.after_forward = self._after_forward
        self.steps.install()
        self.memory.install()
        self.compile = CompileWatch(self.steps.now_ns, self._compile_detected, self._compiled)
        self.compile.install()
        for hooks in (self.data, self.syncs):
            try:
                hooks.install()
            except Exception as exc:  # noqa: BLE001 - a collector must not fail the script
                hooks.uninstall()
                logger.error("%s failed to install and is off: %s: %s", type(hooks).__name__,
                             type(exc).__name__, exc)
        if self.settings.sample_ms > 0:
            try:
                self.sampler = start_sampler(self.settings.sample_ms / 1000, self.raw,
                                             self.steps.now_ns, self.device,
                                             nvml_bus_id(self.device))
            except Exception as exc:  # noqa: BLE001 - a collector must not fail the script
                logger.error("metric sampler failed to start: %s: %s", type(exc).__name__, exc)
        self.scaler = GradScalerMonitor(self.steps.scaler_update)
        self.scaler.install()
        try:
            self.timeline.start()
        except Exception as exc:  # noqa: BLE001 - a collector must not fail the script
            self._disable_timeline(exc)
        self.user_profiler = watch_user_profiler(self.timeline, lambda: self._timeline_ok)
        self.watcher = start_watcher(self.settings, self.raw, self.rank, steps.now_ns)
        if not self.ranks.distributed:
            spawned_ranks.install(self)
        child_processes.install(self)
        exit_guard.install(self)  # os._exit() in the script saves the session first
        if self.device.is_accelerator:
            self.driver_at_start = cuda_driver_initialised()
        _current = self
        logger.debug("session: rank %d, device %s (%s), run %s", self.rank, self.device.kind,
                     self.device.name, self.run.path)

    def _settle_device(self) -> None:
        """Once the script has initialised CUDA: which device it trains on, and its metrics."""
        assert self.device is not None
        try:
            if self.device.settle() and self.sampler is not None:
                self.sampler.watch_gpu(self.device, nvml_bus_id(self.device), now=False)
        except Exception as exc:  # noqa: BLE001 - a collector must not fail the script
            self.device.settled = True  # asked once: the facts stay as they are
            logger.warning("could not read the device's facts: %s: %s", type(exc).__name__,
                           exc)

    def step(self) -> None:  # dsprof.step(): a hand-marked step boundary
        if self.steps is not None and not self._finished and self.spawned is None:
            self.steps.manual_step()

    @script_signals.deferring  # the script's signal handlers wait for the boundary's work
    def _on_boundary(self, step: int) -> None:
        if self.device is not None and not self.device.settled:
            self._settle_device()
        if self.progress is not None and self.steps is not None:
            self.progress.update(self.steps.steps_done)
        if self.ranks.distributed and self._backend is None:
            self._backend = _backend()  # scripts destroy their group before exit
            self._group_rank = default_group_rank()
        # no gloo group is destroyed before the exit, where dsprof lets it go safely
        process_groups.keep_alive()
        if self.memory is not None and self.steps is not None:
            self.memory.on_step(step, self.steps.boundaries_ns[-1])
        if self.watcher is not None:
            self.watcher.on_step(step)
        if not self._timeline_ok or self.timeline is None:
            return
        try:
            self.timeline.on_boundary(step)
        except Exception as exc:  # noqa: BLE001
            self._disable_timeline(exc)
        exceeded, memory = (self.memory.exceeded if self.memory else None), self.memory
        if memory is not None and exceeded is not None:
            memory.exceeded = None
            raise exceeded  # into the script, like an out-of-memory error

    @script_signals.deferring
    def _after_backward(self) -> None:
        """At every ``backward()`` end: a loop with no optimizer has no step boundary for its
        first 64 backwards, and its process groups must be held before the script returns."""
        process_groups.keep_alive()
        if self.timeline is not None and self._timeline_ok:
            try:
                self.timeline.backward_ended()
                if self._poll_cap:
                    self.timeline.poll_cap()  # the capture cap under torch.compile
            except Exception as exc:  # noqa: BLE001 - a collector must not fail the script
                self._disable_timeline(exc)

    @script_signals.deferring
    def _after_forward(self) -> None:
        """At every outermost forward's end while the run has no step source yet."""
        if self.timeline is not None and self._timeline_ok:
            try:
                self.timeline.forward_ended()
            except Exception as exc:  # noqa: BLE001 - a collector must not fail the script
                self._disable_timeline(exc)

    def _compile_detected(self) -> None:
        """torch.compile is in use: every hook Dynamo would trace goes (compile_watch.py)."""
        if self.steps is not None:
            self.steps.forwards_off()
        if self.timeline is not None:
            self.timeline.disable_module_hooks()
            self._poll_cap = True
        if self.memory is not None:
            self.memory.disable_activations()
        if self.watcher is not None:
            logger.warning("torch.compile under the op trace (DS_LOG_LEVEL=DEBUG or "
                           "--detect-anomaly): its dispatch mode and module tracker make "
                           "Dynamo run the model eagerly; profile without them to see the "
                           "compiled program")

    def _compiled(self, dur_ns: int) -> None:
        if self.timeline is not None:
            self.timeline.extend_deadline(dur_ns)

    def _disable_timeline(self, exc: BaseException) -> None:
        self._timeline_ok = False
        logger.error("timeline collector failed and is off for the rest of the run: %s: %s",
                     type(exc).__name__, exc)

    def finish(self, exit_status: int, reason: str, error: str | None = None,
               peer_lost: bool = False) -> None:
        """Save everything collected so far. Safe to call more than once, and from the SIGTERM
        thread while the main thread is blocked (the first caller saves). ``peer_lost``: the
        script's exception says another rank went away (:mod:`dsprof.peer_loss`)."""
        with self._finish_lock:
            if self.successor is None:
                return self._finish(exit_status, reason, error, peer_lost)
        self.successor.finish(exit_status, reason, error, peer_lost)

    def release(self) -> None:
        """The run is saved and ingested: other commands may read it now."""
        if self.successor is not None:
            self.successor.release()
            return
        if self.progress is not None:
            self.progress.close()
        if self.lock is not None:
            self.lock.release()

    def forget(self) -> None:
        """In a forked child: this copy is no session (see :mod:`forked_child`)."""
        global _current
        self._finished = True
        if _current is self:
            _current = None

    def stop_collectors(self, save: bool) -> None:
        """Every collector off; with ``save``, what they hold is written to raw/."""
        session_end.stop_collectors(self, save)

    def _finish(self, exit_status: int, reason: str, error: str | None,
                peer_lost: bool = False) -> None:
        global _current
        if self._finished:
            return
        self._finished = True
        if _current is self:
            _current = None
        spawned_ranks.uninstall()
        child_processes.uninstall()
        script_signals.uninstall()
        exit_guard.uninstall()
        if self.spawned is not None:
            spawned_ranks.finish_coordinator(self, exit_status, reason, error)
            return
        session_end.save(self, exit_status, reason, error, peer_lost)
