"""The bootstrap capture's cap where no dsprof hook runs: a script's bare tensor ops.

The capture of step 0 lasts until the first step boundary, or ``max_capture_s`` (default 60 s)
when none comes. The cap was checked at module calls and at ``backward()`` only, the points
where dsprof's code runs in the script's thread. A preprocessing loop of bare tensor ops
(``torch.randn(256, 64).tanh().sum(0)`` per sample, no module) ran past it unchecked: with
``--max-capture 3`` its 6 s of setup were captured whole, 484,543 events in a 191 MB trace,
and the process's peak RSS went from 0.90 GB (plain) to 2.84 GB while Kineto held the events.
A longer setup would grow without bound.

Kineto must be stopped from the thread that records (:mod:`dsprof.collectors.timeline`), at a
point where the script's code is between two Python operations, as a module hook is. A timer
thread cannot stop it; it can make the main thread run a Python handler at its next bytecode
boundary: ``_thread.interrupt_main(signum)`` marks the signal's Python handler pending with no
OS signal sent, so no system call of the script is interrupted. The handler is installed for a
real-time signal nobody uses (``SIGRTMAX - 7``), only while the bootstrap capture lasts, and
only where that signal is at its default (a handler of the script's is never replaced); it is
restored as soon as the capture ends. Not armed off the main thread (``dsprof.profile()`` in a
worker thread keeps the hook checks), nor where the platform has no real-time signals.

The time cap alone did not bound memory: the profiler keeps every op until the capture stops,
and stopping it (saved or dropped) builds the results of them all at once. 12 s of such a
setup took a 0.29 GiB script to 4.72 GiB (60 s would have been ~20). :class:`MemoryWatch` reads
the heap in use every 0.1 s while the capture lasts; past ``--max-capture-mb`` of growth the
cap is due at once and the same alarm rings (1.48 GiB for those 12 s:
``benchmarks/setup_capture_memory.py``).
"""

from __future__ import annotations

import _thread
import ctypes
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from dsprof.collectors.compile_watch import compile_call_running
from dsprof.frames import raised_in_signal_handler
from dsprof.headroom import headroom
from dsprof.hidden_threads import HiddenThread, HiddenTimer

SIGNAL: int | None = (int(signal.SIGRTMAX) - 7) if hasattr(signal, "SIGRTMAX") else None
RETRY_S = 1.0
"""How long a handler that found the capture busy (a compile under way) waits to check again."""
INSIDE_OP_RETRY_S = 0.01
"""About how long a handler that found the main thread inside one of torch's ops waits to ring
again (0.5-2.5 times this, at random; the Python torch runs there, a pack hook, returns within
microseconds to milliseconds)."""
_JITTER = random.Random()  # dsprof's own: the script's draws from the global one stay its own
INSIDE_OP_MAX_S = 1.0
"""How long rings that find an op under way are put off before the cap is kept regardless."""
MEMORY_POLL_S = 0.1
"""How often the memory watch reads the heap in use while the capture records."""
TIME, MEMORY = "time", "memory"
"""What ended a capped capture: ``--max-capture`` seconds, or ``--max-capture-mb``."""


def heap_bytes() -> int | None:
    """Bytes in use on the malloc heap, outside chunks it mapped on their own (glibc's
    ``mallinfo2().uordblks``), else the resident set size (``/proc/self/statm``), else None.

    The heap is where the profiler keeps what it records (here: 145 MiB more after 3 s of
    ``torch.randn(256, 64).tanh().sum(0)``, while the resident size grew 52, reusing pages a
    freed list of tensors had left), and not where a script's large tensors go: malloc maps
    each block over its threshold on its own (128 KiB at first, raised as such blocks are
    freed, 32 MiB at most), so a model's weights or a dataset in large tensors leave it as it
    was (400 tensors of 1 MiB in a fresh process: unchanged)."""
    info = _MALLINFO2()
    if info is not None:
        return int(info.uordblks)
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2_reader() -> Callable[[], _MallInfo2 | None]:
    """glibc >= 2.33's ``mallinfo2`` (the older ``mallinfo`` wraps at 4 GiB), or a reader
    that gives None (another libc)."""
    try:
        libc = ctypes.CDLL(None)
        fn = libc.mallinfo2
    except (OSError, AttributeError, TypeError):
        return lambda: None
    fn.restype = _MallInfo2
    fn.argtypes = []
    return fn  # type: ignore[no-any-return]


_MALLINFO2 = _mallinfo2_reader()


class MemoryWatch:
    """Calls ``over(grown)`` once, from its own thread, when the heap in use
    (:func:`heap_bytes`) has grown ``limit`` bytes past what it was at :meth:`start`. Every op
    the capture records is kept in the profiler's memory until the capture stops, and stopping
    it builds the results of them all at once (module docstring): the growth while it records
    is what bounds that."""

    def __init__(self, limit: int, over: Callable[[int], None]):
        self.limit = limit
        self._over = over
        self._done = threading.Event()
        self.base: int | None = None

    def start(self) -> bool:
        self.base = heap_bytes()
        if self.base is None:
            return False
        thread = HiddenThread(self._watch, "dsprof-capture-memory")  # dsprof/hidden_threads.py
        thread.start()
        return True

    def stop(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        base = self.base or 0
        while not self._done.wait(MEMORY_POLL_S):
            now = heap_bytes()
            if now is not None and now - base > self.limit:
                self._done.set()
                self._over(now - base)
                return


class CapAlarm:
    """Calls ``fire`` on the main thread, between bytecodes, once ``deadline()`` (a
    ``time.perf_counter`` value, which may move later) has passed."""

    def __init__(self, deadline: Callable[[], float], fire: Callable[[], None]):
        self._deadline = deadline
        self._fire = fire
        self._timer: HiddenTimer | None = None
        self._installed = False
        self._lock = threading.Lock()
        self._inside_since: float | None = None  # when a ring first found an op under way

    def arm(self) -> bool:
        """Install the handler and start the timer; False where it cannot be done safely."""
        if SIGNAL is None or threading.current_thread() is not threading.main_thread():
            return False
        try:
            if signal.getsignal(SIGNAL) is not signal.SIG_DFL:
                return False  # the script's, or a library's: never replaced
            signal.signal(SIGNAL, self._handler)
        except (ValueError, OSError):
            return False
        self._installed = True
        self._schedule(self._deadline() - time.perf_counter())
        return True

    def disarm(self) -> None:
        """Stop the timer and put the signal back at its default (main thread only)."""
        with self._lock:
            timer, self._timer = self._timer, None
            installed, self._installed = self._installed, False
        if timer is not None:
            timer.cancel()
        if installed and SIGNAL is not None:
            try:
                if signal.getsignal(SIGNAL) == self._handler:
                    signal.signal(SIGNAL, signal.SIG_DFL)
            except ValueError:  # not the main thread: a pending ring finds the flag off
                pass

    def _schedule(self, delay: float) -> None:
        timer = HiddenTimer(max(0.0, delay), self._ring, "dsprof-capture-cap")
        with self._lock:
            if not self._installed:
                return
            self._timer = timer
        timer.start()

    def ring_now(self) -> None:
        """Another thread found the cap due before the deadline (memory): ring at once."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._ring()

    def _ring(self) -> None:
        """Timer thread: make the main thread run :meth:`_handler` at its next bytecode."""
        if self._installed and SIGNAL is not None and signal.getsignal(SIGNAL) == self._handler:
            _thread.interrupt_main(SIGNAL)

    def _handler(self, signum: int, frame: Any) -> None:
        """Main thread. Before the deadline (it moved: a compile's time is not counted), or
        while Dynamo compiles, check again later; else the cap is reached."""
        if not self._installed:
            return
        left = self._deadline() - time.perf_counter()
        if left > 0:
            self._schedule(left)
            return
        if _compiling():
            self._schedule(RETRY_S)
            return
        if inside_an_op(frame):
            now = time.perf_counter()
            if self._inside_since is None:
                self._inside_since = now
            # where Python runs inside every op (DEBUG tracing's dispatch watch), a ring nearly
            # always lands in one: past INSIDE_OP_MAX_S the cap is kept, record left open or not
            if now - self._inside_since < INSIDE_OP_MAX_S:
                # at a random phase: a loop whose period is near a fixed delay would be found
                # in the same op at every ring (dropout's mask drawn, then packed: 1 run in 3)
                self._schedule(INSIDE_OP_RETRY_S * (0.5 + _JITTER.random() * 2))
                return
        self._fire()
        if self._installed:  # the capture did not end there (a torch.jit.trace under way)
            self._schedule(RETRY_S)


def _compiling() -> bool:
    """Dynamo or Inductor is at work on this thread, or a ``torch.compile()`` call is under way
    (its first imports Dynamo: seconds on a loaded machine, counted as compile time once it
    returns), so stopping the profiler then is no clean point of the script's."""
    import sys

    if compile_call_running():
        return True
    guards = sys.modules.get("torch._guards")
    if guards is None:
        return False
    try:
        return guards.TracingContext.try_get() is not None
    except Exception as caught:  # an older or newer torch without it: not compiling
        if raised_in_signal_handler(caught):
            raise  # the script's own signal handler's: it is the script's
        return False


def inside_an_op(frame: Any) -> bool:
    """Whether ``frame`` (where the alarm interrupted the main thread) is Python that torch runs
    inside one of the ops it records: the saved-tensor hooks in use (an op packs what it saves
    for backward inside its own record), anything under the autograd engine (each node it runs
    is a record: tensor hooks, a custom Function's backward), a ``__torch_dispatch__``. The
    profiler stopped there leaves that op's record open, and torch warns on the script's stderr
    ("aten::mul (Triggered internally at .../collection.cpp:664)": pytorch/examples' GAT, whose
    dropout packed its mask in dsprof's own hook when the memory cap rang)."""
    import sys

    torch = sys.modules.get("torch")
    hooks: tuple[Any, ...] = ()
    if torch is not None:
        try:
            hooks = torch._C._autograd._top_saved_tensors_default_hooks(False) or ()
        except Exception as caught:  # an older or newer torch without it: no hooks known
            if raised_in_signal_handler(caught):
                raise  # the script's own signal handler's: it is the script's
    codes = {code for hook in hooks if (code := getattr(hook, "__code__", None)) is not None}
    while frame is not None:
        code = frame.f_code
        if code in codes or code.co_name == "__torch_dispatch__" or (
                code.co_name == "_engine_run_backward"
                and code.co_filename.replace("\\", "/").endswith("torch/autograd/graph.py")):
            return True
        frame = frame.f_back
    return False


class CaptureCap:
    """The bootstrap capture's caps: ``max_s`` seconds, and ``max_bytes`` of growth of the
    heap in use while it records (:class:`MemoryWatch`; None: no memory cap).
    Checked at every module call (a global forward pre-hook, unless ``module_hooks`` is off:
    torch.compile), by a :class:`CapAlarm` where no hook runs, and by :meth:`check` where the
    timeline polls (each backward() under torch.compile). Once a cap is passed, on the
    recording thread, ``reached`` is called once (outside ``torch.jit.trace``, which records
    every op: the next call stops it); ``reason`` says which (:data:`TIME`, :data:`MEMORY`)."""

    def __init__(self, max_s: float, reached: Callable[[], None], module_hooks: bool,
                 max_bytes: int | None = None):
        self.deadline = time.perf_counter() + max_s
        self.max_s = max_s
        self.reason: str | None = None
        self.grown = 0
        """Bytes the heap in use had grown when the memory cap was passed."""
        self._over_memory = False
        self._reached = reached
        self._thread = threading.get_ident()
        self._hook: Any = None
        if module_hooks:
            from torch.nn.modules.module import register_module_forward_pre_hook

            self._hook = register_module_forward_pre_hook(self._module_called)
        self._memory: MemoryWatch | None = None  # (set before the alarm can ring)
        self._alarm: CapAlarm | None = CapAlarm(self._due, self.check)
        self._alarm.arm()
        if max_bytes is not None and self._alarm is not None:
            watch = MemoryWatch(max_bytes, self._memory_over)
            if watch.start():
                self._memory = watch
                if self.reason is not None:  # reached meanwhile (a zero cap): no watch left
                    watch.stop()

    def why(self) -> str:
        """The warning said when the cap is reached. It is said before the steps come, if
        they do: a script that builds a large model or runs an evaluation before its first
        optimizer step (llm.c's train_gpt2.py: 133 MiB of its own small tensors) reaches it
        with nothing to change, so it asks for no code change, only says when one is needed."""
        if self.reason == MEMORY:
            head = (f"no step boundary yet, and the process's heap grew "
                    f"{self.grown / 2**20:.0f} MiB while the profiler kept every op since the "
                    "start (its records and the script's small tensors alike)")
            knob = "--max-capture-mb"
        else:
            head = f"no step boundary after {self.max_s:.0f} s"
            knob = "--max-capture"
        return (f"{head}: the capture of the setup stops here. The steps are still found and "
                "profiled when they come; a loop with no optimizer step or backward() marks "
                f"them with dsprof.step(), and {knob} raises the cap")

    def _due(self) -> float:
        """When the cap is reached: now once memory is past its cap, else the deadline."""
        return float("-inf") if self._over_memory else self.deadline

    def _memory_over(self, grown: int) -> None:
        """Memory watch thread: the cap is due now; the alarm rings the recording thread."""
        self.grown = grown
        self._over_memory = True
        alarm = self._alarm
        if alarm is not None:
            alarm.ring_now()

    def extend(self, ns: int) -> None:
        """Compilation took ``ns``: it does not count against the cap."""
        self.deadline += ns / 1e9

    def _module_called(self, module: Any, args: Any) -> None:
        self.check()

    def check(self) -> None:
        if self.reason is not None or time.perf_counter() < self._due() \
                or threading.get_ident() != self._thread:
            return  # (reached once already: the alarm and a hook may both have rung)
        import torch

        if torch._C._get_tracing_state() is not None:
            return
        self.reason = MEMORY if self._over_memory else TIME
        self.remove()
        with headroom():  # the capture stops and is written, on the script's stack
            self._reached()

    def remove(self, keep_alarm: bool = False) -> None:
        """No check from here on (``keep_alarm``: the module hook only)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._alarm is not None and not keep_alarm:
            self._alarm.disarm()
            self._alarm = None
        if self._memory is not None and not keep_alarm:
            self._memory.stop()
            self._memory = None
