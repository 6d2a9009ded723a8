"""Whether a run directory is still being written, and how far it got.

The process that owns a run (``dsprof run``, the coordinator of a multi-rank job,
``dsprof.profile()``) holds an exclusive ``flock`` on ``.dsprof.lock`` in the run directory from
the start of the session until the run is saved and ingested. The kernel drops the lock when
the process ends, however it ends (SIGKILL and out-of-memory kills included), so a lock file
left behind is never mistaken for a live run: readers try the lock, and a run whose lock they
can take is not running, whatever ``meta.json`` says.

Every command that opens a run asks :func:`running` first, and refuses a live run with one line
("still running, N steps so far") instead of ingesting half of it; ingestion itself takes the
same lock, so two commands on a ``--no-analyze`` run ingest it once.

Progress: each session keeps ``raw/rank<R>/progress``, a 12-digit step count rewritten in place
at every step boundary (one ``pwrite``, no fsync: it is a hint for the refusal message, and the
step collector's records stay the truth).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from dsprof.rundir import RunDir

LOCK_FILE = ".dsprof.lock"
PROGRESS_FILE = "progress"  # raw/rank<R>/
_WIDTH = 12

# run directories whose lock this process holds (the owner reads its own run at the end)
_held: dict[Path, RunLock] = {}


@dataclass(frozen=True)
class Running:
    """A live run: who writes it and how many steps its ranks finished so far (None: unknown)."""

    pid: int | None
    host: str | None
    steps: int | None

    def describe(self, path: Path) -> str:
        steps = f"{self.steps} steps so far" if self.steps is not None else "no steps yet"
        who = f" (pid {self.pid} on {self.host})" if self.pid is not None else ""
        return (f"{path} is still running, {steps}{who}; it is analyzed once, when the run "
                "ends: run the command again then")


class RunLock:
    """The owner's lock on a run directory, held until :meth:`release`."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd < 0:
            return
        _held.pop(self.path, None)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = -1

    def detach(self) -> None:
        """In a forked child: forget the lock without touching it (the parent still holds it;
        the inherited descriptor closes with the child)."""
        _held.pop(self.path, None)
        self._fd = -1


def acquire(run: RunDir) -> RunLock | None:
    """Take the run's lock for the session that writes it; None when the directory cannot hold a
    lock file (the session still runs; readers then go by meta.json alone)."""
    path = run.path.absolute()
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, orjson.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    except OSError:
        os.close(fd)
        return None
    lock = RunLock(path, fd)
    _held[path] = lock
    return lock


def running(run: RunDir) -> Running | None:
    """The run's writer, if one is alive (None for a finished, killed or imported run)."""
    path = run.path.absolute()
    if path in _held:
        return None  # this process writes it: its own end-of-run analysis reads it
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            return _describe(run, fd)
        return None  # nobody holds it: the writer is gone
    finally:
        os.close(fd)


def _describe(run: RunDir, fd: int) -> Running:
    try:
        owner = orjson.loads(os.pread(fd, 4096, 0))
    except (OSError, orjson.JSONDecodeError):
        owner = {}
    if not isinstance(owner, dict):
        owner = {}
    pid = owner.get("pid")
    return Running(pid if isinstance(pid, int) else None, str(owner.get("host") or "") or None,
                   steps_so_far(run))


@contextmanager
def ingest_lock(run: RunDir) -> Iterator[None]:
    """Held while a reader ingests a run, so that two commands ingest it once. A directory
    that cannot hold the lock file (read-only) is ingested without it."""
    path = run.path.absolute()
    if path in _held:
        yield
        return
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Progress:
    """``raw/rank<R>/progress``: the steps this rank finished, updated in place."""

    def __init__(self, raw_dir: Path):
        self._fd = -1
        try:
            self._fd = os.open(raw_dir / PROGRESS_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                               0o644)
            self.update(0)
        except OSError:
            self.close()

    def update(self, steps: int) -> None:
        if self._fd < 0:
            return
        try:
            os.pwrite(self._fd, b"%0*d\n" % (_WIDTH, steps), 0)
        except OSError:
            self.close()  # a full disk: the hint stops, the run goes on

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def detach(self) -> None:
        """In a forked child: stop writing (the descriptor is the parent's file)."""
        self._fd = -1


def rank_steps(run: RunDir, rank: int) -> int | None:
    """The steps ``rank`` has finished, from its progress file (None: not readable)."""
    try:
        text = (run.path / "raw" / f"rank{rank}" / PROGRESS_FILE).read_bytes()[:_WIDTH]
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def steps_so_far(run: RunDir) -> int | None:
    """The most steps any rank has finished, from the progress files (None: none readable)."""
    done = [n for r in run.raw_ranks() if (n := rank_steps(run, r)) is not None]
    return max(done) if done else None
