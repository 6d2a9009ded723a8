"""Live, op-by-op watching of the whole run: the DEBUG trace and the NaN/Inf check.

One ``TorchDispatchMode`` sees every op the dispatcher runs on the stepping thread (and in
the autograd engine, which inherits the mode), inside and outside profiler windows, with
torch's ``ModuleTracker`` naming the module an op runs in (forward) or for (backward).

At ``DS_LOG_LEVEL=DEBUG`` it logs, as they happen (to stderr and the run's dsprof.log):

- ``op``: name, inputs as ``dtype[shape]``, device, module, phase, step and host time;
- ``alloc``: an op output of at least ``trace_alloc_bytes`` that is new storage;
- ``collective``: c10d / functional collectives, with their tensors;
- ``step``: each boundary (the step collector's INFO line, plus the next step's number).

``DSPROF_TRACE_FILTER`` (collectors/trace_filter.py) selects ops, modules and steps. With
``--detect-anomaly`` (and at DEBUG) every op's floating outputs are checked for NaN/Inf
(collectors/anomaly.py). The duration is host time around the op: on a GPU, the launch.

Ops are eager only: a torch.compile'd region runs as one opaque call. A Python dispatch mode
costs tens of microseconds per op (benchmarks/debug_overhead.py), which is why it is only
installed at DEBUG or with ``--detect-anomaly``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.module_tracker import ModuleTracker

from dsprof.collectors import anomaly
from dsprof.collectors.trace_filter import TraceFilter
from dsprof.errors import NumericalAnomalyError
from dsprof.log import logger

_COLLECTIVE_NAMESPACES = {"c10d", "_c10d_functional", "c10d_functional", "_dtensor"}
_SKIP_NAMESPACES = {"profiler"}  # record_function enter/exit: dsprof's and the user's markers
# Ops whose output is uninitialized memory, which may hold NaN bit patterns: not checked.
_UNINITIALIZED = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
                  "empty_permuted", "resize_", "set_"}


def _dtype_name(dtype: torch.dtype, _cache: dict[torch.dtype, str] = {}) -> str:  # noqa: B006
    name = _cache.get(dtype)
    if name is None:
        name = _cache[dtype] = str(dtype).replace("torch.", "")
    return name


def tensors(args: Any, kwargs: Any) -> list[torch.Tensor]:
    """The tensors among an op's arguments. Aten ops take tensors, or lists of them, at the top
    level only, so this is a one-level walk, several times cheaper than a pytree flatten."""
    out = []
    for v in (*args, *kwargs.values()):
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(x for x in v if isinstance(x, torch.Tensor))
    return out


def describe_tensors(ts: list[torch.Tensor]) -> tuple[str, str]:
    """(``"float32[32,512], int64[32]"``, first tensor's device)."""
    parts = [f"{_dtype_name(v.dtype)}[{','.join(map(str, v.shape))}]" for v in ts]
    return ", ".join(parts), (str(ts[0].device) if ts else "")


class _Mode(TorchDispatchMode):
    def __init__(self, watcher: DispatchWatcher):
        super().__init__()
        self.watcher = watcher

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kwargs = kwargs or {}
        w = self.watcher
        if func.namespace in _SKIP_NAMESPACES:
            return func(*args, **kwargs)
        t0 = time.perf_counter_ns()
        out = func(*args, **kwargs)
        dur = time.perf_counter_ns() - t0
        if w.check and not func.is_view and func._opname not in _UNINITIALIZED:
            w.check_outputs(func, args, kwargs, out)
        if w.tracing:
            w.trace_op(func, args, kwargs, out, dur)
        return out


class DispatchWatcher:
    """Args:
        trace: log every op (DEBUG tracing).
        check: stop at the first NaN/Inf output.
        trace_filter: which ops, modules and steps the trace prints.
        alloc_bytes: outputs of at least this many new bytes get an ``alloc`` line.
        raw_dir: where anomaly.json goes.
        rank: the process rank.
        now_ns: the run clock.
    """

    def __init__(self, *, trace: bool, check: bool, trace_filter: TraceFilter, alloc_bytes: int,
                 raw_dir: Path, rank: int, now_ns: Callable[[], int]):
        self.trace = trace
        self.check = check
        self.filter = trace_filter
        self.matcher = trace_filter.compile()
        self.alloc_bytes = alloc_bytes
        self.raw_dir = raw_dir
        self.rank = rank
        self.now_ns = now_ns
        self.step = 0
        self.tracing = trace and trace_filter.step_selected(0)
        self.record: dict[str, Any] | None = None
        self._in_optimizer = 0
        self._tracker: ModuleTracker | None = None
        self._mode: _Mode | None = None
        self._hooks: list[Any] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        self._hooks = [register_optimizer_step_pre_hook(self._optimizer_enter),
                       register_optimizer_step_post_hook(self._optimizer_exit)]
        self._tracker = ModuleTracker()
        self._tracker.__enter__()
        self._mode = _Mode(self)
        self._mode.__enter__()
        what = " and ".join(x for x, on in (("tracing ops", self.trace),
                                            ("checking outputs for NaN/Inf", self.check)) if on)
        logger.debug("dispatch watcher: %s%s", what,
                     f" (filter {self.filter.text!r})" if self.filter.text else "")

    def stop(self) -> None:
        """Leave the mode. The script may have left modes of its own above ours; they are left
        alone and ours only stops acting."""
        self.trace = self.check = self.tracing = False
        mode, tracker = self._mode, self._tracker
        self._mode = self._tracker = None
        if mode is not None:
            from torch.utils._python_dispatch import _get_current_dispatch_mode

            if _get_current_dispatch_mode() is mode:
                mode.__exit__(None, None, None)
        if tracker is not None:
            tracker.__exit__(None, None, None)
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def on_step(self, step: int) -> None:
        """Step ``step`` ended: ``step + 1`` begins."""
        self.step = step + 1
        self.tracing = self.trace and self.filter.step_selected(self.step)
        if self.trace:
            logger.debug("step %d begins", self.step)

    # -- per op ---------------------------------------------------------------------------
    def _optimizer_enter(self, *args: Any) -> None:
        self._in_optimizer += 1

    def _optimizer_exit(self, *args: Any) -> None:
        self._in_optimizer = max(0, self._in_optimizer - 1)

    def where(self) -> tuple[str, str]:
        """(module path, phase) of the op running now."""
        tracker = self._tracker
        module = ""
        if tracker is not None:
            depth = -1
            for name in tracker.parents:
                d = name.count(".")
                if name != "Global" and (d > depth or (d == depth and len(name) > len(module))):
                    module, depth = name, d
        if torch._C._current_graph_task_id() != -1:
            return module, "backward"
        if self._in_optimizer:
            return module, "optimizer"
        return module, ("forward" if module else "other")

    def trace_op(self, func: Any, args: Any, kwargs: Any, out: Any, dur_ns: int) -> None:
        name = str(func)
        module, phase = self.where()
        if not self.matcher(name, module):
            return
        ins = tensors(args, kwargs)
        inputs, device = describe_tensors(ins)
        kind = "collective" if func.namespace in _COLLECTIVE_NAMESPACES else "op"
        logger.debug("%s %s in=[%s] %s module=%s phase=%s step=%d dur=%.1fus", kind, name,
                     inputs, device or "-", module or "-", phase, self.step, dur_ns / 1e3)
        if self.alloc_bytes <= 0:
            return
        outs = [out] if isinstance(out, torch.Tensor) else tensors(
            out if isinstance(out, (list, tuple)) else (), {})
        big = [t for t in outs if t.layout == torch.strided and not t.is_meta
               and t.untyped_storage().nbytes() >= self.alloc_bytes]
        if not big:
            return
        held = {a.untyped_storage().data_ptr() for a in ins
                if a.layout == torch.strided and not a.is_meta}
        for t in big:
            storage = t.untyped_storage()
            if storage.data_ptr() not in held:
                logger.debug("alloc %.2f MiB %s[%s] %s by %s module=%s phase=%s step=%d",
                             storage.nbytes() / 2**20, _dtype_name(t.dtype),
                             ",".join(map(str, t.shape)), t.device, name, module or "-", phase,
                             self.step)

    def check_outputs(self, func: Any, args: Any, kwargs: Any, out: Any) -> None:
        hit = anomaly.first_nonfinite(out, args, kwargs)
        if hit is None:
            return
        self.check = False  # stop at the first: the ops that follow inherit it
        module, phase = self.where()
        record = anomaly.build_record(func, args, kwargs, hit[0], hit[1], rank=self.rank,
                                      step=self.step, ts_ns=self.now_ns(), module=module,
                                      phase=phase)
        self.record = record
        path = anomaly.write_record(self.raw_dir, record)
        text = anomaly.describe(record)
        logger.error("%s\n  (written to %s; the run stops here)", text, path)
        raise NumericalAnomalyError(f"{text.splitlines()[0]}; details in {path}")
