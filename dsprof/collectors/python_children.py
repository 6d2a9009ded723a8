"""Python processes the profiled script starts with ``subprocess`` (or ``os.posix_spawn``):
their command lines, how long they ran and how they ended, so a run that saw no training step
can say that the training ran in one of them.

``dsprof run`` profiles the process it starts. A driver that runs its training as a child
(``subprocess.run([sys.executable, "train.py", "300"])``, a sweep running one training per
configuration, ``subprocess.Popen([sys.executable, "-m", "torch.distributed.run", ...])``) ran
its child unprofiled, as it should (the child's environment and argv are the script's), but
its run said only "the script never imported torch, so there was nothing to profile" while the
child had trained 300 steps; and ``dsprof run $(which torchrun) --nproc-per-node=2 train.py``
ran torchrun's launcher as the script, its two workers unprofiled: "no step boundaries were
seen". The run records each Python child here, and the summary says where the training went
and what to type instead (``reports/python_child_note.py``).

Observation only. ``subprocess.Popen._execute_child`` (where ``Popen``, ``subprocess.run``,
``call``, ``check_output`` and asyncio's subprocesses start the child) runs as without dsprof,
with the script's own arguments; the child is recorded after it returned, and an error it
raises reaches the script without dsprof's frame. ``Popen._handle_exitstatus`` (where a
``Popen`` learns its exit status: ``wait()``, ``poll()``, ``communicate()``) is seen after it
ran, and so are ``os.waitpid``, ``wait``, ``wait3``, ``wait4`` and ``waitid``, where a child
reaped outside its ``Popen`` ends (asyncio, psutil, the script's own waits). Installed before the script runs (a driver need not import torch), in the process dsprof
started only. Not recorded: children that are no Python (``git``, ``nvidia-smi``), those torch's
own code starts (its compile workers, ``torch/_inductor``; its ``python -c`` probes), ``os.system`` and ``os.fork`` + ``exec``,
``multiprocessing``'s processes (:mod:`.child_processes`), and processes started by a child.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from dsprof.collectors.python_commands import (
    LIBRARY_CHILDREN,
    command_words,
    python_launcher,
    started_by_torch,
)
from dsprof.frames import drop_own_frames, hidden_from_warnings, raised_in_signal_handler

MAX_CHILDREN = 16
"""Children recorded; the ones started after them are only counted (``python_children_more``)."""
MAX_ARGS = 32
"""Words of a child's argv recorded (a run directory is read later as untrusted data)."""
MAX_ARG_CHARS = 256
"""Characters of each word recorded."""



@dataclass
class Child:
    """One recorded child: ``argv`` as recorded (cut to the bounds), ``cut`` when it was."""

    argv: list[str]
    cut: bool
    launcher: str | None
    pid: int | None
    start_ns: int
    end_ns: int | None = None  # when its exit was seen
    exit_status: int | None = None
    running_at_end: bool | None = None  # its exit unseen: still running when the script ended


class ChildLog:
    """The Python children of the process ``pid``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.children: list[Child] = []
        self.more = 0  # started after MAX_CHILDREN were recorded
        self.end_ns: int | None = None  # when recording stopped: the end of the script
        self._lock = threading.Lock()
        self._open: weakref.WeakKeyDictionary[Any, Child] = weakref.WeakKeyDictionary()
        self._unreaped: dict[int, Child] = {}  # pid -> a child whose end is not seen yet

    def started(self, handle: Any, args: Any, executable: Any = None,
                spawned_pid: int | None = None) -> None:
        """A child was started: ``handle`` its ``Popen``, or None and its ``spawned_pid`` (its
        end is then seen where ``os.waitpid`` or the like reaps it)."""
        if os.getpid() != self.pid or self.end_ns is not None:
            return
        words = command_words(args)
        if words is None:
            return
        launcher = python_launcher(os.fsdecode(executable) if executable else words[0], words)
        if launcher is None or any(lib in w for w in words[:3] for lib in LIBRARY_CHILDREN) \
                or started_by_torch():
            return
        kept = [w[:MAX_ARG_CHARS] for w in words[:MAX_ARGS]]
        cut = len(words) > MAX_ARGS or any(len(w) > MAX_ARG_CHARS for w in words[:MAX_ARGS])
        pid = _int_or_none(getattr(handle, "pid", None) if handle is not None else spawned_pid)
        child = Child(kept, cut, launcher or None, pid, time.monotonic_ns())
        with self._lock:
            if len(self.children) >= MAX_CHILDREN:
                self.more += 1
                return
            self.children.append(child)
            if handle is not None:
                self._open[handle] = child
            if pid is not None:
                self._unreaped[pid] = child

    def ended(self, handle: Any) -> None:
        """``handle``'s exit status is known (``Popen.returncode``)."""
        child = self._open.get(handle)
        if child is not None:
            self._end(child, _int_or_none(getattr(handle, "returncode", None)))

    def reaped(self, pid: Any, exit_status: int) -> None:
        """The process ``pid`` ended with ``exit_status`` (as ``Popen.returncode``: negative for
        a signal), seen by a wait of ``os``'s."""
        if os.getpid() != self.pid or not isinstance(pid, int) or pid <= 0:
            return
        child = self._unreaped.get(pid)
        if child is not None:
            self._end(child, exit_status)

    def _end(self, child: Child, exit_status: int | None) -> None:
        with self._lock:
            if child.end_ns is None:
                child.end_ns = time.monotonic_ns()
            if child.exit_status is None:
                child.exit_status = exit_status
            if child.pid is not None and self._unreaped.get(child.pid) is child:
                del self._unreaped[child.pid]

    def stop(self) -> None:
        """The script has ended: children whose exit was not seen are timed up to now, and
        whether each still runs is read. Idempotent."""
        uninstall()
        if self.end_ns is not None:
            return
        self.end_ns = time.monotonic_ns()
        for handle, child in list(self._open.items()):
            if child.exit_status is None:  # reaped unseen (os.wait with SIGCHLD ignored...)
                child.exit_status = _int_or_none(getattr(handle, "returncode", None))
        for child in self.children:
            if child.end_ns is None and child.pid is not None:
                child.running_at_end = _still_running(child.pid)

    def to_meta(self) -> dict[str, Any]:
        """meta.json ``python_children`` (and ``python_children_more``), or {} when none."""
        if not self.children:
            return {}
        end = self.end_ns or time.monotonic_ns()
        entries = [{"argv": c.argv, **({"cut": True} if c.cut else {}),
                    **({"launcher": c.launcher} if c.launcher else {}),
                    "seconds": round(((c.end_ns or end) - c.start_ns) / 1e9, 3),
                    # true: its exit was seen; false: still running at the script's end; null:
                    # it ended unseen (reaped by no wait dsprof sees), its seconds run to the
                    # script's end
                    "ended": True if c.end_ns is not None else
                    (False if c.running_at_end else None),
                    "exit_status": c.exit_status}
                   for c in self.children]
        return {"python_children": entries,
                **({"python_children_more": self.more} if self.more else {})}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _still_running(pid: int) -> bool | None:
    """Whether ``pid`` is still a running child of this process (Linux's ``/proc``; a zombie
    has ended), None where that cannot be read. Psutil's ``Popen`` (Accelerate's launcher) and
    asyncio reap their children themselves: their exit goes by ``Popen`` unseen."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False if os.path.isdir("/proc/self") else None
    try:
        state, ppid = stat.rsplit(b")", 1)[1].split()[:2]
        return int(ppid) == os.getpid() and state != b"Z"
    except (IndexError, ValueError):
        return None


# ---- the hooks --------------------------------------------------------------------------

_log: ChildLog | None = None
_originals: dict[str, Any] = {}  # name -> subprocess's / os's own, while dsprof's stand in
_inside_popen = threading.local()  # a Popen's own os.posix_spawn is not a second child


def install() -> ChildLog:
    """Record the Python children of this process from now on (``dsprof run``'s deferred
    session, before the script runs)."""
    global _log
    uninstall()
    _log = ChildLog(os.getpid())
    for name, (owner, wrapper) in _HOOKS.items():
        original = (owner.__dict__.get(name) if owner is subprocess.Popen else
                    getattr(owner, name, None))
        if original is not None:
            _originals[name] = original
            setattr(owner, name, wrapper)
    return _log


def stop() -> None:
    """The script has ended (or the session saves at its ``os._exit``, exec or SIGTERM)."""
    if _log is not None:
        _log.stop()


def take_meta() -> dict[str, Any]:
    """meta.json's keys for this process's children (:meth:`ChildLog.to_meta`), once."""
    global _log
    log, _log = _log, None
    if log is None or log.pid != os.getpid():
        return {}
    log.stop()
    return log.to_meta()


def uninstall() -> None:
    """The hooks go (what was recorded stays for :func:`take_meta`)."""
    for name, original in list(_originals.items()):
        owner, mine = _HOOKS[name]
        if getattr(owner, name, None) is mine:  # a library that put its own there keeps it
            setattr(owner, name, original)
        del _originals[name]


def _execute_child(self: Any, args: Any, executable: Any, *rest: Any, **kwargs: Any) -> None:
    original = _originals.get("_execute_child") or _lost("_execute_child")
    _inside_popen.active = True
    try:
        original(self, args, executable, *rest, **kwargs)
    except BaseException as exc:
        drop_own_frames(exc)  # the script's `except` prints what it prints plain
        raise
    finally:
        _inside_popen.active = False
    _observe(lambda log: log.started(self, args, executable))


def _handle_exitstatus(self: Any, *args: Any, **kwargs: Any) -> None:
    original = _originals.get("_handle_exitstatus") or _lost("_handle_exitstatus")
    try:
        original(self, *args, **kwargs)
    except BaseException as exc:
        drop_own_frames(exc)
        raise
    _observe(lambda log: log.ended(self))


def _spawn_hook(name: str) -> Any:
    """dsprof's ``os.posix_spawn[p]``: one frame, which an error it passes on drops."""
    def spawn(path: Any, argv: Any, *args: Any, **kwargs: Any) -> int:
        original = _originals.get(name) or _lost(name)
        try:
            pid: int = original(path, argv, *args, **kwargs)
        except BaseException as exc:
            drop_own_frames(exc)
            raise
        if not getattr(_inside_popen, "active", False):
            _observe(lambda log: log.started(None, argv, path, pid))
        return pid
    return spawn


_posix_spawn = _spawn_hook("posix_spawn")
_posix_spawnp = _spawn_hook("posix_spawnp")


# The waits of os's that reap a child: where a child not reaped by its Popen ends. asyncio's
# child watcher (it sets Popen.returncode itself), psutil's Popen (Accelerate's launcher) and
# a script's own os.posix_spawn + os.waitpid reap so; before, such a child's end went unseen
# and its seconds ran to the script's end: an asyncio child of 50 ms, then time.sleep(3), was
# named as the training, "up to 4.9 s".
def _wait_hook(name: str) -> Any:
    """dsprof's ``os.NAME``: the wait runs as plain (its arguments, its result, its errors:
    ChildProcessError), then a recorded child it reaped is marked ended."""
    def wait(*args: Any, **kwargs: Any) -> Any:
        original = _originals.get(name) or _lost(name)
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            drop_own_frames(exc)
            raise
        if _log is not None and _log._unreaped:  # (a wait for no recorded child: no more)
            _observe(lambda log: log.reaped(*_wait_end(name, result)))
        return result
    wait.__name__ = wait.__qualname__ = name
    return wait


_CHILD_ENDS = {getattr(os, "CLD_EXITED", None): 1, getattr(os, "CLD_KILLED", None): -1,
               getattr(os, "CLD_DUMPED", None): -1}


def _wait_end(name: str, result: Any) -> tuple[int, int]:
    """The pid and exit status (``Popen.returncode``'s) a wait returned; pid 0 where it saw no
    child end (a ``WNOHANG`` poll, a stopped or continued child)."""
    if name == "waitid":
        sign = _CHILD_ENDS.get(result.si_code) if result is not None else None
        return (result.si_pid, sign * result.si_status) if sign else (0, 0)
    pid, status = result[0], result[1]
    if not pid or not (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
        return 0, 0
    return pid, os.waitstatus_to_exitcode(status)


_HOOKS: dict[str, tuple[Any, Any]] = {
    "_execute_child": (subprocess.Popen, _execute_child),
    "_handle_exitstatus": (subprocess.Popen, _handle_exitstatus),
    **{name: (os, wrapper) for name, wrapper in (
        ("posix_spawn", _posix_spawn), ("posix_spawnp", _posix_spawnp),
        *((name, _wait_hook(name)) for name in ("waitpid", "wait", "wait3", "wait4", "waitid")))},
}
"""name -> (where it is, dsprof's stand-in)"""
for _owner, _wrapper in _HOOKS.values():
    hidden_from_warnings(_wrapper)


def _lost(name: str) -> Any:
    # (cannot happen while installed; a stale reference after uninstall finds it in place)
    owner, mine = _HOOKS[name]
    original = getattr(owner, name)
    if original is mine:
        raise RuntimeError(f"dsprof's subprocess hook lost the original {name}()")
    return original


def _observe(record: Any) -> None:
    log = _log
    if log is None or not _originals:  # (after uninstall: a call already under way)
        return
    try:
        record(log)
    except Exception as caught:  # a command dsprof cannot read is not the script's error
        if raised_in_signal_handler(caught):
            raise  # the script's own signal handler's: it is the script's
