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
ran. Installed before the script runs (a driver need not import torch), in the process dsprof
started only. Not recorded: children that are no Python (``git``, ``nvidia-smi``), those torch's
own code starts (its compile workers, ``torch/_inductor``; its ``python -c`` probes), ``os.system`` and ``os.fork`` + ``exec``,
``multiprocessing``'s processes (:mod:`.child_processes`), and processes started by a child.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from types import FrameType
from typing import Any

from dsprof.frames import (
    DSPROF_DIR,
    drop_own_frames,
    hidden_from_warnings,
    raised_in_signal_handler,
    standard_library,
)

MAX_CHILDREN = 16
"""Children recorded; the ones started after them are only counted (``python_children_more``)."""
MAX_ARGS = 32
"""Words of a child's argv recorded (a run directory is read later as untrusted data)."""
MAX_ARG_CHARS = 256
"""Characters of each word recorded."""

# console scripts that run Python and start the training's processes themselves
LAUNCHER_SCRIPTS = {"torchrun": "torchrun", "accelerate": "accelerate",
                    "accelerate-launch": "accelerate", "deepspeed": "deepspeed",
                    "lightning": "lightning", "fabric": "lightning"}
# the same launchers run as `python -m MODULE`
LAUNCHER_MODULES = {"torch.distributed.run": "torchrun", "torch.distributed.launch": "torchrun",
                    "accelerate.commands.launch": "accelerate",
                    "accelerate.commands.accelerate_cli": "accelerate",
                    "deepspeed.launcher.runner": "deepspeed"}
_PYTHON_NAME = re.compile(r"(python|pypy)[0-9.]*[dmu]?(\.exe)?")
# what a shell would read otherwise than as words (a string command run by the shell)
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?\[\]{}~!\\\n]")
# torch.compile's compile and autotune workers (torch/_inductor/compile_worker/__main__.py)
_LIBRARY_CHILDREN = ("torch/_inductor/", "torch._inductor")


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

    def started(self, handle: Any, args: Any, executable: Any = None,
                spawned_pid: int | None = None) -> None:
        """A child was started: ``handle`` its ``Popen``, or None and its ``spawned_pid`` (its
        end is then not seen)."""
        if os.getpid() != self.pid or self.end_ns is not None:
            return
        words = command_words(args)
        if words is None:
            return
        launcher = python_launcher(os.fsdecode(executable) if executable else words[0], words)
        if launcher is None or any(lib in w for w in words[:3] for lib in _LIBRARY_CHILDREN) \
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

    def ended(self, handle: Any) -> None:
        """``handle``'s exit status is known (``Popen.returncode``)."""
        child = self._open.get(handle)
        if child is not None and child.end_ns is None:
            child.end_ns = time.monotonic_ns()
            child.exit_status = _int_or_none(getattr(handle, "returncode", None))

    def stop(self) -> None:
        """The script has ended: children whose exit was not seen are timed up to now, and
        whether each still runs is read. Idempotent."""
        uninstall()
        if self.end_ns is not None:
            return
        self.end_ns = time.monotonic_ns()
        for handle, child in list(self._open.items()):
            if child.exit_status is None:  # reaped by others (asyncio, psutil set returncode)
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
                    # it ended unseen (another reaped it), its seconds run to the script's end
                    "ended": True if c.end_ns is not None else
                    (False if c.running_at_end else None),
                    "exit_status": c.exit_status}
                   for c in self.children]
        return {"python_children": entries,
                **({"python_children_more": self.more} if self.more else {})}


def command_words(args: Any) -> list[str] | None:
    """A ``Popen`` command as words: a list as given, a string split as the shell would when it
    holds nothing but words (``"python train.py"``); None when it is not read so."""
    if isinstance(args, (str, bytes, os.PathLike)):
        text = os.fsdecode(args)
        if _SHELL_SYNTAX.search(text):
            return None
        try:
            words = shlex.split(text)
        except ValueError:
            return None
    else:
        try:
            words = [os.fsdecode(a) for a in args]
        except TypeError:
            return None
    return words or None


def python_launcher(program: str, words: list[str]) -> str | None:
    """The launcher ``words`` start (``torchrun``, ``accelerate``, ...), "" for any other
    Python interpreter, None when ``program`` runs no Python that dsprof knows."""
    name = os.path.basename(program)
    if name in LAUNCHER_SCRIPTS:
        return LAUNCHER_SCRIPTS[name]
    if program != sys.executable and not _PYTHON_NAME.fullmatch(name):
        return None
    module = python_module(words)
    return LAUNCHER_MODULES.get(module or "", "")


def python_module(words: list[str]) -> str | None:
    """The module of ``python [OPTIONS] -m MODULE ...``, else None."""
    for i, word in enumerate(words[1:], start=1):
        if word == "-m":
            return words[i + 1] if i + 1 < len(words) else None
        if not word.startswith("-") or word in ("-c", "--"):
            return None
    return None


def started_by_torch() -> bool:
    """Whether the code that starts the child now is torch's own: the first frame of the stack
    outside dsprof and the standard library (``subprocess.run``, asyncio) lies in torch's
    package. torch.compile's ``cpu_vec_isa.py`` runs ``python -c "...cdll.LoadLibrary(...)"``
    probes (10 of 16 recorded children of a 20-step compiled MLP), words that name no
    ``torch/_inductor``."""
    torch_dir = _torch_dir()
    if torch_dir is None:
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith((DSPROF_DIR, "<frozen")) or standard_library(filename)):
            return filename.startswith(torch_dir)
        frame = frame.f_back
    return False


_torch_dirs: list[str] = []  # torch's package folder, once torch is imported


def _torch_dir() -> str | None:
    if not _torch_dirs:
        torch = sys.modules.get("torch")
        filename = getattr(torch, "__file__", None)
        if not isinstance(filename, str):
            return None  # not (yet) imported: no torch code can be starting the child
        _torch_dirs.append(os.path.dirname(os.path.abspath(filename)) + os.sep)
    return _torch_dirs[0]


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
    for name, wrapper in (("_execute_child", _execute_child),
                          ("_handle_exitstatus", _handle_exitstatus)):
        original = subprocess.Popen.__dict__.get(name)
        if original is not None:
            _originals[name] = original
            setattr(subprocess.Popen, name, wrapper)
    for name, wrapper in (("posix_spawn", _posix_spawn), ("posix_spawnp", _posix_spawnp)):
        original = getattr(os, name, None)
        if original is not None:
            _originals[name] = original
            setattr(os, name, wrapper)
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
        owner: Any = os if name.startswith("posix_spawn") else subprocess.Popen
        mine = {"_execute_child": _execute_child, "_handle_exitstatus": _handle_exitstatus,
                "posix_spawn": _posix_spawn, "posix_spawnp": _posix_spawnp}[name]
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


def _posix_spawn(path: Any, argv: Any, *args: Any, **kwargs: Any) -> int:
    return _spawned("posix_spawn", path, argv, args, kwargs)


def _posix_spawnp(path: Any, argv: Any, *args: Any, **kwargs: Any) -> int:
    return _spawned("posix_spawnp", path, argv, args, kwargs)


def _spawned(name: str, path: Any, argv: Any, args: Any, kwargs: Any) -> int:
    original = _originals.get(name) or _lost(name)
    try:
        pid: int = original(path, argv, *args, **kwargs)
    except BaseException as exc:
        drop_own_frames(exc)
        raise
    if not getattr(_inside_popen, "active", False):
        _observe(lambda log: log.started(None, argv, path, pid))
    return pid


for _wrapper in (_execute_child, _handle_exitstatus, _posix_spawn, _posix_spawnp, _spawned):
    hidden_from_warnings(_wrapper)


def _lost(name: str) -> Any:
    # (cannot happen while installed; a stale reference after uninstall finds it in place)
    owner: Any = os if name.startswith("posix_spawn") else subprocess.Popen
    original = getattr(owner, name)
    if original in (_execute_child, _handle_exitstatus, _posix_spawn, _posix_spawnp):
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
