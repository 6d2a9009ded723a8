"""How long the training thread waits for its batches, for every step of the run.

``DataLoader.__iter__`` and ``_BaseDataLoaderIter.__next__`` are wrapped (no user code change):
each ``__next__`` is timed on the calling thread and its time is added to the step in progress
(``steps.data_wait_ns``), and so are ``iter()`` and the ``__next__`` that ends a pass, where
workers that do not persist start and stop (an epoch's first step waited 80-125 ms for them
against 12.7 ms steps, and was read as time off the CPU when only ``__next__`` counted); the
leading dimension of the batch it returns becomes
``steps.batch_size``. Per DataLoader, its settings (workers, pinning, prefetch) and totals go to
the ``dataloaders`` table, with the user line that iterated it.

With ``num_workers=0`` the time inside ``__next__`` is the loading itself; with workers it is
the time the batch was not ready yet. Either way it is time the step did not compute.

Cost per batch: two clock reads, a dict lookup and a frame check, a few microseconds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from dsprof.collectors.worker_clock import Readings, WorkerSampler, WorkerTimes
from dsprof.frames import (
    INSTALLED_DIRS,
    drop_own_frames,
    hidden_from_warnings,
    internal_file,
    raised_in_signal_handler,
    shown_path,
    standard_library,
)
from dsprof.log import logger
from dsprof.vocabulary import MAX_BATCH_TENSORS


def user_site(depth: int = 2) -> tuple[str, str]:
    """(file:line, function) of the nearest caller outside torch and dsprof."""
    site, function, _ = user_site_and_caller(depth + 1, caller=False)
    return site, function


def user_site_and_caller(depth: int = 2, caller: bool = True) -> tuple[str, str, str | None]:
    """(file:line, function) of the nearest caller outside torch, dsprof and the standard
    library, and, where that line lies in an installed package (Pyro's ``torch_item``, a
    Stable-Baselines3 rollout), the file:line of the script's own code that led there (None
    otherwise, or when no frame outside the installed packages is on the stack)."""
    frame = sys._getframe(depth)
    first = frame
    while frame is not None:
        name = frame.f_code.co_filename
        # the standard library's frames are passed too: ``log.info("loss %.4f", loss)`` reads
        # the tensor in logging's getMessage, for the script's line
        if not _is_library(name) and not standard_library(name):
            site = f"{shown_path(name)}:{frame.f_lineno}"
            return site, frame.f_code.co_name, (_script_caller(frame) if caller else None)
        frame = frame.f_back
    return (f"{shown_path(first.f_code.co_filename)}:{first.f_lineno}", first.f_code.co_name,
            None)


def _script_caller(frame: Any) -> str | None:
    if not _installed(frame.f_code.co_filename):
        return None
    frame = frame.f_back
    while frame is not None:
        name = frame.f_code.co_filename
        if not _is_library(name) and not _installed(name) and not internal_file(name):
            return f"{shown_path(name)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _installed(filename: str) -> bool:
    return any(marker in filename for marker in INSTALLED_DIRS)


def _package_dir(module: str) -> str:
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    return os.path.dirname(origin) + os.sep if origin else f"{os.sep}{module}{os.sep}"


# Frames in these files are library code, not the user's (exact package folders, so a user
# project that happens to live in a folder named "torch" or "dsprof" still counts as theirs).
TORCH_DIR = _package_dir("torch")
_LIBRARY_PREFIXES = (TORCH_DIR, _package_dir("dsprof"))


def _is_library(filename: str) -> bool:
    return (filename.startswith(_LIBRARY_PREFIXES) or filename.startswith("<frozen")
            or filename.endswith(f"{os.sep}runpy.py"))


def batch_size_of(batch: Any) -> int | None:
    """Leading dimension of the first tensor in a batch (tensor, sequence or mapping)."""
    for _ in range(4):  # nested containers a few levels deep, never a deep walk
        shape = getattr(batch, "shape", None)
        if shape is not None:
            return int(shape[0]) if len(shape) else None
        if isinstance(batch, (list, tuple)) and batch:
            batch = batch[0]
        elif isinstance(batch, dict) and batch:
            batch = next(iter(batch.values()))
        else:
            return None
    return None


def batch_tensors_of(batch: Any) -> tuple[int, int] | None:
    """(tensors, bytes) in a batch (tensors in nested tuples, lists and dicts): what a worker
    process has to move into shared memory and the training process has to map back, per
    batch. None when the batch holds no tensor."""
    tensors = nbytes = 0
    stack = [batch]
    while stack and tensors < MAX_BATCH_TENSORS:
        item = stack.pop()
        if hasattr(item, "untyped_storage") and hasattr(item, "element_size"):
            tensors += 1
            nbytes += int(item.numel()) * int(item.element_size())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return (tensors, nbytes) if tensors else None


@dataclass
class LoaderStats:
    index: int
    site: str
    dataset: str
    batch_size: int | None
    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None
    iterators: int = 0
    batches: int = 0
    wait_ns: int = 0
    wait_cpu_ns: int = 0
    first_wait_ns: int = 0
    batch_tensors: int | None = None
    batch_bytes: int | None = None
    workers_in_waits: WorkerTimes = field(default_factory=WorkerTimes)

    def to_row(self, cpu_count: int, torch_threads: int, host_cpus: int) -> dict[str, Any]:
        sampled = self.workers_in_waits
        measured = sampled.waits > 0
        return {"loader": self.index, "site": self.site, "dataset": self.dataset,
                "batch_size": self.batch_size, "num_workers": self.num_workers,
                "pin_memory": self.pin_memory, "persistent_workers": self.persistent_workers,
                "prefetch_factor": self.prefetch_factor, "iterators": self.iterators,
                "batches": self.batches, "wait_ns": self.wait_ns,
                "wait_cpu_ns": self.wait_cpu_ns,
                "first_wait_ns": self.first_wait_ns, "batch_tensors": self.batch_tensors,
                "batch_bytes": self.batch_bytes, "cpu_count": cpu_count, "host_cpus": host_cpus,
                "torch_threads": torch_threads,
                "worker_waits": sampled.waits if measured else None,
                "worker_cpu_ns": sampled.cpu_ns if measured else None,
                "worker_runq_ns": sampled.runq_ns if measured else None,
                "worker_wall_ns": sampled.wall_ns if measured else None}


class DataLoaderCollector:
    """Wraps the DataLoader iterator protocol while installed; ``take_step()`` hands the step
    collector the wait and batch size of the step that just ended."""

    def __init__(self) -> None:
        self.loaders: list[LoaderStats] = []
        self._by_loader: weakref.WeakKeyDictionary[Any, LoaderStats] = weakref.WeakKeyDictionary()
        self._by_iter: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
        self._originals: dict[str, Any] = {}
        self._step_wait_ns = 0
        self._step_batch: int | None = None
        self._step_batches = 0
        self._thread = threading.get_ident()
        self._workers = WorkerSampler()

    def install(self) -> None:
        from torch.utils.data import dataloader as dl

        self._originals = {"iter": dl.DataLoader.__iter__, "next": dl._BaseDataLoaderIter.__next__}
        orig_iter, orig_next = self._originals["iter"], self._originals["next"]
        collector = self

        def __iter__(loader: Any) -> Any:
            # iter() starts the workers (unless they persist): the step waits for that too
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            try:
                it = orig_iter(loader)
            except BaseException as exc:
                drop_own_frames(exc)  # the script's `except` prints what it prints plain
                raise
            ns, cpu_ns = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
            try:
                collector._iterated(loader, it, ns, cpu_ns)
            except Exception as caught:  # never break the user's loop
                if raised_in_signal_handler(caught):
                    raise  # the script's own signal handler's: it is the script's
                logger.debug("dataloader collector: could not register an iterator", exc_info=True)
            return it

        def __next__(it: Any) -> Any:
            workers = collector._sample_workers(it)  # read outside the timed wait
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            try:
                batch = orig_next(it)
            except StopIteration as exc:
                # the pass's end: workers that do not persist are stopped (joined) here
                collector._pass_ended(it, time.perf_counter_ns() - t0,
                                      time.thread_time_ns() - c0)
                drop_own_frames(exc)
                raise
            except BaseException as exc:
                drop_own_frames(exc)  # the script's `except` prints what it prints plain
                raise
            ns, cpu_ns = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
            if workers is not None:
                collector._workers_sampled(it, workers)
            collector._returned(it, batch, ns, cpu_ns)
            return batch

        dl.DataLoader.__iter__ = hidden_from_warnings(__iter__)  # type: ignore[method-assign]
        dl._BaseDataLoaderIter.__next__ = hidden_from_warnings(  # type: ignore[method-assign]
            __next__)
        logger.debug("dataloader collector: DataLoader iteration is timed")

    def uninstall(self) -> None:
        if not self._originals:
            return
        from torch.utils.data import dataloader as dl

        dl.DataLoader.__iter__ = self._originals["iter"]  # type: ignore[method-assign]
        dl._BaseDataLoaderIter.__next__ = self._originals["next"]  # type: ignore[method-assign]
        self._originals = {}

    def _iterated(self, loader: Any, it: Any, ns: int, cpu_ns: int) -> None:
        stats = self._by_loader.get(loader)
        if stats is None:
            site, _ = user_site(3)
            workers = int(loader.num_workers)
            stats = LoaderStats(
                index=len(self.loaders), site=site, dataset=type(loader.dataset).__name__,
                batch_size=loader.batch_size, num_workers=workers,
                pin_memory=bool(loader.pin_memory),
                persistent_workers=bool(loader.persistent_workers),
                prefetch_factor=loader.prefetch_factor if workers > 0 else None)
            self.loaders.append(stats)
            self._by_loader[loader] = stats
            logger.debug("dataloader %d at %s: batch_size %s, %d workers", stats.index, site,
                         stats.batch_size, workers)
        stats.iterators += 1
        self._by_iter[it] = [stats, True]
        self._waited(stats, ns, cpu_ns, per_pass=True)

    def _pass_ended(self, it: Any, ns: int, cpu_ns: int) -> None:
        """The ``__next__`` that ended a pass (StopIteration): no batch, but the step waited
        for it (non-persistent workers are joined there)."""
        try:
            entry = self._by_iter.get(it)
            if entry is not None:
                self._waited(entry[0], ns, cpu_ns, per_pass=True)
        except Exception as caught:  # never break the user's loop
            if raised_in_signal_handler(caught):
                raise  # the script's own signal handler's: it is the script's
            logger.debug("dataloader collector: could not time a pass's end", exc_info=True)

    def _waited(self, stats: LoaderStats, ns: int, cpu_ns: int, per_pass: bool) -> None:
        stats.wait_ns += ns
        stats.wait_cpu_ns += cpu_ns
        if per_pass:
            stats.first_wait_ns += ns
        if threading.get_ident() == self._thread:
            self._step_wait_ns += ns

    def _sample_workers(self, it: Any) -> Readings | None:
        """Readings of the workers before this wait, when it is one to sample: not a pass's
        first batch (the workers' start-up, ``first_wait_ns``)."""
        entry = self._by_iter.get(it)
        if entry is None or entry[1] or not entry[0].num_workers:
            return None
        try:
            return self._workers.before(it)
        except Exception as caught:  # never break the user's loop
            if raised_in_signal_handler(caught):
                raise  # the script's own signal handler's: it is the script's
            logger.debug("dataloader collector: could not read the workers", exc_info=True)
            return None

    def _workers_sampled(self, it: Any, before: Readings) -> None:
        entry = self._by_iter.get(it)
        if entry is None:
            return
        try:
            WorkerSampler.after(before, entry[0].workers_in_waits)
        except Exception as caught:  # never break the user's loop
            if raised_in_signal_handler(caught):
                raise  # the script's own signal handler's: it is the script's
            logger.debug("dataloader collector: could not read the workers", exc_info=True)

    def _returned(self, it: Any, batch: Any, ns: int, cpu_ns: int) -> None:
        entry = self._by_iter.get(it)
        if entry is None:
            return
        stats, first = entry
        if stats.batches == 0:  # the first batch's make-up stands for the loader's
            counted = batch_tensors_of(batch)
            if counted is not None:
                stats.batch_tensors, stats.batch_bytes = counted
        stats.batches += 1
        self._waited(stats, ns, cpu_ns, per_pass=first)
        if first:
            entry[1] = False
        if threading.get_ident() == self._thread:
            self._step_batch = batch_size_of(batch)
            self._step_batches += 1

    def take_step(self) -> tuple[int | None, int | None, int | None]:
        """(data wait ns, batch size, batches) of the step that just ended; None when no
        loader ran. The batches count those of every loader the stepping thread iterated: a
        step that also ran a pass over another loader (an evaluation) got more than the
        others."""
        if not self.loaders:
            return None, None, None
        out = (self._step_wait_ns, self._step_batch, self._step_batches)
        self._step_wait_ns = 0
        self._step_batch = None
        self._step_batches = 0
        return out

    def rows(self) -> list[dict[str, Any]]:
        import torch

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = torch.get_num_threads()
        # the machine's, which ranks on one host share (analyzers/loader_workers.rank_cpus)
        host = os.cpu_count() or int(cpus or 1)
        return [s.to_row(int(cpus or 1), threads, host) for s in self.loaders]
