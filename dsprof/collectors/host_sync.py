"""Calls that make the host wait for the device, at the user's line, for the whole run.

On a GPU, ``loss.item()``, ``.cpu()``, ``.tolist()``, ``.numpy()``, ``torch.nonzero`` and
``torch.cuda.synchronize()`` block the Python thread until every queued kernel has run, so the
CPU cannot launch ahead and the GPU idles while Python catches up. The profiler shows the
``cudaStreamSynchronize`` but not which line of the training loop asked for it; this collector
wraps those entry points (no code change), times each call and counts it per (step, call, user
line). Calls made from inside torch itself (printing a tensor, an optimizer's own bookkeeping)
are not the user's choice and are not counted, with one exception: formatting a one-value
tensor (``f"{norm:.4f}"``, ``"{:.2f}".format(loss)``) is ``Tensor.__format__`` calling ``item()`` for
the script's line, a sync the script wrote as surely as ``norm.item()`` (llm.c's
``train_gpt2.py`` prints the ``clip_grad_norm_`` result so every step).

A tensor's value read by Python itself is the same sync: ``if loss < best:``, ``while not
done:``, ``assert torch.isfinite(loss)`` (``Tensor.__bool__``), ``float(loss)`` and
``int(correct)``. Those are C slots of torch's tensor type, which the interpreter calls without
a Python frame; setting ``__bool__``, ``__float__`` and ``__int__`` on ``torch.Tensor`` routes
them through the same wrapper (and removing them gives back torch's slots). ``__index__`` is
left alone: torch's own indexing and shape code call it far more than any script does.
Printing a tensor (``print(loss)``, ``str(t)``, ``f"{logits}"``) copies its values to the host
too: ``Tensor.__repr__`` is wrapped as ``repr``, and the reads torch's printing makes inside it
are its own.

On CPU these calls do not wait for anything; they are still recorded (device ``cpu``) so the
analyzer can say what would happen on a GPU.

Cost per read (``benchmarks/host_sync_cost.py``, 2-core AMD EPYC, one-value CPU tensor): 2.0-2.5
us added to a counted read from the script's line (its site is kept after the line's first read,
so a deep stack is walked once), ~0.4 us to a read from torch's own files, which return after
the frame check (printing one tensor, one counted read that reads it dozens of times inside:
+13-27 us on ~95 us). On a GPU each of these reads waits for the device, tens of microseconds
at least.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from dsprof.collectors.call_at_line import call_at_line
from dsprof.collectors.compile_watch import invisible_to_dynamo
from dsprof.collectors.dataloader import (
    TORCH_DIR,
    _installed,
    _is_library,
    user_site_and_caller,
)
from dsprof.frames import drop_own_frames, raised_in_signal_handler, standard_library
from dsprof.log import logger

# (owner, attribute, call name). Tensor.to is wrapped too but only counted when it copies a
# device tensor to the host.
_TENSOR_METHODS = (("item", "item"), ("tolist", "tolist"), ("cpu", "cpu"), ("numpy", "numpy"),
                   ("nonzero", "nonzero"), ("to", "to_cpu"))
# (slot, call name): Python reads a tensor's value through these slots of torch's C type, and
# prints it through __repr__ (torch's own Python, which reads the values through the slots)
_TENSOR_SLOTS = (("__bool__", "bool"), ("__float__", "float"), ("__int__", "int"),
                 ("__repr__", "repr"))
# a wrapper set on a class that only inherited the attribute is deleted again at uninstall
_INHERITED = object()


# A DataLoader's own files: a sampler, a dataset's __getitem__ or a collate_fn runs under them
_DATA_DIR = os.path.join(TORCH_DIR, "utils", "data") + os.sep
# how far up the stack a call is looked for under a DataLoader (its sampler, fetcher and
# dataset sit a handful of frames below __next__; a training loop never this deep under it)
_DATA_DEPTH = 24
# script lines whose site is kept (a script calls from a handful; generated code stops here)
_MAX_LINES = 4096


def _loading_data(frame: Any) -> bool:
    """Whether the call runs under a DataLoader's iteration: its sampler (Opacus' Poisson
    sampler's ``mask.nonzero().tolist()``), the dataset's ``__getitem__`` or ``collate_fn``
    in the main process. On CPU tensors that is no sync on a GPU run either: data is loaded on
    the CPU before the script moves it, so the call is neither counted nor advised on."""
    for _ in range(_DATA_DEPTH):
        if frame is None:
            return False
        if frame.f_code.co_filename.startswith(_DATA_DIR):
            return True
        frame = frame.f_back
    return False


def _format_code() -> Any:
    """The code of ``Tensor.__format__``, whose ``item()`` is the formatting line's sync."""
    import inspect

    import torch

    return getattr(inspect.unwrap(torch.Tensor.__format__), "__code__", None)


class HostSyncCollector:
    """Args:
        position: where the run is now: the step in progress, or (a dsprof run) the time of
            the last end that is or may become a step boundary (StepCollector.last_end_ns).
        step_at: the step a ``position`` falls in, asked at :meth:`rows`, once the steps are
            settled; None: a position is the step.

    A call's step is decided as the steps are, not when it is made: a loop with no optimizer
    has its first 64 ``backward()`` ends kept aside until they are judged its steps, and the
    calls made among them were all step 0 (a hand update's one ``loss.item()`` an iteration
    read as 63 calls in step 0, then one a step, and no finding; botorch's ``.numpy()`` as 261
    in step 0, "2.4x per step" where it ran 4 a step).
    """

    def __init__(self, position: Callable[[], int],
                 step_at: Callable[[int], int] | None = None):
        self.position = position
        self.step_at = step_at
        # (position, call, site, function, device, caller) -> [count, total_ns, max_ns]
        self.calls: dict[tuple[int, str, str, str, str, str | None], list[int]] = {}
        # (code, line) of a script line -> (under a DataLoader, site, function, caller)
        self._lines: dict[tuple[Any, int], tuple[bool, str, str, str | None]] = {}
        # code object -> whether it is torch's or dsprof's (torch's printing of one tensor
        # reads values through the wrapper dozens of times: a lookup, not three string tests)
        self._library_codes: dict[Any, bool] = {}
        self._restore: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        import torch

        self._hide_from_dynamo()
        for attr, call in _TENSOR_METHODS + _TENSOR_SLOTS:
            self._wrap(torch.Tensor, attr, call)
        # print(param): Parameter's own __repr__ calls Tensor's from torch's code, where the
        # read would be torch's; at Parameter's it is the script's line
        self._wrap(torch.nn.Parameter, "__repr__", "repr")
        self._wrap(torch, "nonzero", "nonzero")
        self._wrap(torch.cuda, "synchronize", "synchronize")
        logger.debug("host sync collector: %d entry points wrapped", len(self._restore))

    def uninstall(self) -> None:
        for owner, attr, original in reversed(self._restore):
            if original is _INHERITED:
                # torch.Tensor's own C slot comes back (a Python __bool__ left on the class
                # would keep every if-on-a-tensor going through a Python call)
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)
        self._restore = []

    def _wrap(self, owner: Any, attr: str, call: str) -> None:
        import torch

        original = getattr(owner, attr)
        record = self._record
        is_to = call == "to_cpu"
        # Dynamo traces this wrapper when compiled code calls .item() (or .cpu(), ...): it folds
        # is_compiling() to True and sees torch's own method, so the graph (and its breaks) is
        # the one the script gets without dsprof; sys._getframe would be a graph break of ours.
        is_compiling = torch.compiler.is_compiling
        format_code = _format_code()
        tracing = torch._C._get_tracing_state
        # float()/int() of a tensor that requires grad warns (once a process, torch's flag)
        warns_on_grad = call in ("float", "int")
        library_codes = self._library_codes

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if is_compiling():
                return original(*args, **kwargs)
            try:
                frame = sys._getframe(1)
                fn, fargs, fkwargs = original, args, kwargs
                if tracing() is not None or (
                        warns_on_grad and args and getattr(args[0], "requires_grad", False)):
                    # a warning torch gives in the call names the caller's line, not this
                    # wrapper's
                    fn, fargs, fkwargs = call_at_line, (frame, original, args, kwargs), {}
                if frame.f_code is format_code and frame.f_back is not None:
                    frame = frame.f_back  # who formatted the tensor: the script, or torch's repr
                library = library_codes.get(frame.f_code)
                if library is None:
                    library = _is_library(frame.f_code.co_filename)
                    if len(library_codes) < _MAX_LINES:
                        library_codes[frame.f_code] = library
                if library:
                    return fn(*fargs, **fkwargs)
                t0 = time.perf_counter_ns()
                out = fn(*fargs, **fkwargs)
            except BaseException as exc:
                drop_own_frames(exc)  # the script's `except` prints what it prints plain
                raise
            ns = time.perf_counter_ns() - t0
            try:
                record(call, args, out, ns, is_to)
            except Exception as caught:  # never fail the user's call
                if raised_in_signal_handler(caught):
                    raise  # the script's own signal handler's: it is the script's
                logger.debug("host sync collector: could not record %s", call, exc_info=True)
            return out

        invisible_to_dynamo(wrapper)
        wrapper.__name__ = getattr(original, "__name__", attr)
        wrapper.__doc__ = getattr(original, "__doc__", None)
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        # where pickle looks a function up by name, it finds the wrapper (torch.Tensor.item
        # sent to a spawn pool failed to pickle: "no attribute" of dsprof's module)
        if isinstance(owner, type):
            wrapper.__module__, wrapper.__qualname__ = owner.__module__, \
                f"{owner.__qualname__}.{attr}"
        else:
            wrapper.__module__, wrapper.__qualname__ = owner.__name__, attr
        inherited = isinstance(owner, type) and attr not in vars(owner)
        setattr(owner, attr, wrapper)
        self._restore.append((owner, attr, _INHERITED if inherited else original))

    @staticmethod
    def _hide_from_dynamo() -> None:
        invisible_to_dynamo(_is_library, recursive=True)
        invisible_to_dynamo(HostSyncCollector._record, recursive=True)

    def _record(self, call: str, args: tuple[Any, ...], out: Any, ns: int, is_to: bool) -> None:
        src = args[0] if args else None
        device = getattr(src, "device", None)
        if is_to:
            # Only a copy from an accelerator to the host is a sync.
            out_device = getattr(out, "device", None)
            if (device is None or out_device is None or device.type == "cpu"
                    or out_device.type != "cpu"):
                return
        if call == "synchronize":
            device_name = "cuda"
        elif device is None or device.type == "cpu":
            device_name = "cpu"
        else:
            device_name = str(device)
        frame = sys._getframe(2)  # the wrapper's caller
        line = (frame.f_code, frame.f_lineno)
        where = self._lines.get(line)
        if where is None:
            site, function, caller = user_site_and_caller(3)
            where = (_loading_data(frame), site, function, caller)
            # A line of the script's own is the site itself (not torch's or the standard
            # library's, whose site is further up the stack, nor an installed package's, whose
            # script caller depends on it), and a line under a DataLoader (a dataset's
            # __getitem__) is never the training loop's too: both are kept, so the next call
            # from the line walks no frame.
            filename = frame.f_code.co_filename
            if (not _is_library(filename) and not _installed(filename)
                    and not standard_library(filename) and len(self._lines) < _MAX_LINES):
                self._lines[line] = where
        loading, site, function, caller = where
        if device_name == "cpu" and loading:
            return
        key = (self.position(), call, site, function, device_name, caller)
        entry = self.calls.get(key)
        if entry is None:
            self.calls[key] = [1, ns, ns]
        else:
            entry[0] += 1
            entry[1] += ns
            entry[2] = max(entry[2], ns)

    def rows(self) -> list[list[Any]]:
        """[step, call, site, function, device, count, total_ns, max_ns, caller] per key."""
        calls: dict[tuple[int, str, str, str, str, str | None], list[int]] = {}
        for (position, *where), (count, total, longest) in self.calls.items():
            call, site, function, device, caller = where
            step = position if self.step_at is None else self.step_at(position)
            key = (step, call, site, function, device, caller)
            entry = calls.get(key)
            if entry is None:
                calls[key] = [count, total, longest]
            else:
                entry[0] += count
                entry[1] += total
                entry[2] = max(entry[2], longest)
        keys = sorted(calls, key=lambda k: (*k[:5], k[5] or ""))
        return [[*k[:5], *calls[k], k[5]] for k in keys]
