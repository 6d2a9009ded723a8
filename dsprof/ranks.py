"""Which rank this process is, where a multi-rank run writes, and how its ranks are merged.

A multi-rank run is one run directory: every rank's session writes ``raw/rank<R>/`` (its traces,
``session.json`` and ``dsprof.log``), and no rank writes ``meta.json`` while the job runs except
the coordinator, which writes the header at the start and, once every rank has finished (or the
wait for the missing ones is over), merges the per-rank records into it and ingests the run:

* ``dsprof run --nproc-per-node N``: the launching dsprof process is the coordinator; the
  ranks it starts through torch's elastic launcher know it from ``DSPROF_LAUNCHED=1``.
* ``torchrun ... -m dsprof run SCRIPT`` (the user's own launcher): rank 0 is the coordinator.
  With no ``-o``, every rank derives the same directory from the start time of the process
  that launched it (torchrun's agent, the common parent of the node's ranks).

``session.json`` is written when a rank's session starts (``status: running``) and again when
it ends (``status: finished`` with the exit status), so a rank killed outright (SIGKILL, out of
memory) is told apart from one that never started.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dsprof.collectors.compile_watch import compile_meta
from dsprof.errors import RunDirError
from dsprof.log import SESSION_NOT_STARTED, logger
from dsprof.rundir import SESSION_FILE, RunDir

LAUNCHED_ENV = "DSPROF_LAUNCHED"
# the pid of the `dsprof run --nproc-per-node` process that started this rank
LAUNCHER_PID_ENV = "DSPROF_LAUNCHER_PID"
# set by `dsprof run --nproc-per-node` when it will analyze: each rank ingests its own trace
RANK_INGEST_ENV = "DSPROF_RANK_INGEST"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


@dataclass(frozen=True)
class RankEnv:
    """Args:
        rank, local_rank, world_size: from torch.distributed's launcher variables.
        launched: started by ``dsprof run --nproc-per-node`` (the parent coordinates).
    """

    rank: int
    local_rank: int
    world_size: int
    launched: bool

    @classmethod
    def from_env(cls) -> RankEnv:
        rank = _env_int("RANK", _env_int("LOCAL_RANK", 0))
        return cls(rank, _env_int("LOCAL_RANK", rank), _env_int("WORLD_SIZE", 1),
                   os.environ.get(LAUNCHED_ENV) == "1")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.launched

    @property
    def ingests_own_trace(self) -> bool:
        """Whether this rank ingests its own trace when its script ends (DESIGN.md "Scale"):
        under dsprof's launcher when the coordinator will analyze the run; under the user's
        torchrun the rank's own ``--analyze`` setting says (the caller checks it)."""
        return self.distributed and (not self.launched
                                     or os.environ.get(RANK_INGEST_ENV) == "1")

    @property
    def coordinator(self) -> bool:
        """Writes meta.json and ingests: rank 0 of a launcher that is not dsprof's."""
        return self.distributed and not self.launched and self.rank == 0


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_launcher() -> bool:
    """In a rank started by ``dsprof run --nproc-per-node``: have the kernel kill this process
    when the launcher dies (``PR_SET_PDEATHSIG``), so that a launcher killed outright (SIGKILL,
    out of memory) leaves no rank training on. SIGKILL, not SIGTERM: nobody is left to merge
    what the rank would save, and a rank whose main thread holds the GIL in a C++ join (the
    gloo teardown hang) would never act on SIGTERM. The profiler windows it already wrote stay.

    The setting belongs to this process only: the kernel clears it in the processes the script
    forks (DataLoader workers), so they behave as without dsprof. A launcher that died before
    the call is caught by the parent check; a process whose parent is not the launcher, though
    it runs (a dsprof session the script started, which inherited the variables), is left as
    it is. Returns whether the setting is in place (Linux, a child of dsprof's launcher)."""
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if not launcher.isdigit() or not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() == int(launcher):
        return True
    if _pid_alive(int(launcher)):  # not the launcher's child (a dsprof the script started)
        libc.prctl(_PR_SET_PDEATHSIG, 0, 0, 0, 0)
        return False
    os.kill(os.getpid(), signal.SIGKILL)  # reparented: the launcher is already gone
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def shared_run_path(runs_dir: Path, name: str) -> Path:
    """The run directory every rank of this node computes alike: named after the start time of
    the launching process (pid in the name, so two jobs started in the same second differ)."""
    import psutil

    parent = psutil.Process(os.getppid())
    started = _dt.datetime.fromtimestamp(parent.create_time())
    return runs_dir / f"{name}-{started:%Y%m%d-%H%M%S}-p{parent.pid}"


def open_shared(path: Path) -> RunDir:
    """Create (or join) a multi-rank run directory; several ranks may race here. The path is
    made absolute, so a script's ``os.chdir`` cannot move it."""
    shown, path = path, Path(path).absolute()
    try:
        (path / "raw").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot write the run directory {path}: {exc.strerror or exc}; "
                          "choose a writable place with -o") from None
    return RunDir(path, shown)


STILL_RUNNING = ("still running when the run was merged (late, or hung in its script's exit); "
                 "kept: the profiler windows it saved, no per-step timings")


def read_record(run: RunDir, rank: int) -> dict[str, Any] | None:
    path = run.path / "raw" / f"rank{rank}" / SESSION_FILE
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def wait_for_ranks(run: RunDir, world_size: int, timeout_s: float) -> list[int]:
    """Until every rank's session has finished, or ``timeout_s`` passed; returns the ranks
    still unfinished.

    Every rank calls this before dsprof's own heavy work after the script (its own ingest, the
    coordinator's analysis): parsing and DuckDB would otherwise take the cores from ranks that
    are still in their last steps or their teardown. That is more than a slower end: under
    torch 2.13, a DDP script over gloo can deadlock at exit when the gloo worker thread that
    needs the GIL to free its last work item gets no CPU before the main thread joins it (seen
    under CI load, rank 1 hung in ``~ProcessGroupGloo`` while rank 0 ingested).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = [r for r in range(world_size) if not _ended(read_record(run, r))]
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(0.1)


def _ended(rec: dict[str, Any] | None) -> bool:
    """A rank's session finished, or its process is gone (killed on this host: nothing more
    will come from it)."""
    if rec is None:
        return False
    if rec.get("status") == "finished":
        return True
    import socket

    return rec.get("host") == socket.gethostname() and not _alive_here(rec)


def _alive_here(rec: dict[str, Any]) -> bool:
    """Whether the process of a rank's record still runs on this host (a rank that has not
    finished but is alive is late or hung, not dead)."""
    import socket

    pid = rec.get("pid")
    if not isinstance(pid, int) or pid <= 0 or rec.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else: still a live process
        return True
    return True


def exit_text(code: int) -> str:
    """``-9`` -> ``killed by SIGKILL``; ``3`` -> ``exit status 3``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code > 128:
        try:
            return f"exit status {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit status {code}"


def merge_ranks(run: RunDir, world_size: int, launcher_failures: dict[int, int] | None = None,
                launcher_first: int | None = None) -> dict[str, Any]:
    """meta.json fields describing the ranks, from their session records.

    Args:
        launcher_failures: rank -> exit code (negative: signal) as the launcher saw it.
        launcher_first: the rank the launcher saw fail first (its error files' timestamps),
            used when no failed rank recorded when it ended.
    """
    failures = launcher_failures or {}
    ended: dict[int, int] = {}  # failed rank -> when its session ended (epoch ns)
    devices, clocks, failed, ranks = {}, {}, {}, []
    interrupted: set[str] = set()  # ranks a SIGINT stopped mid-script
    unprofiled: set[str] = set()  # ranks whose session could not start: they ran on
    followed: set[str] = set()  # failures that followed another's (a peer gone, a SIGTERM)
    backend = None
    lead: dict[str, Any] | None = None
    for r in range(world_size):
        rec = read_record(run, r)
        has_raw = (run.path / "raw" / f"rank{r}").is_dir()
        seen = f" ({exit_text(failures[r])})" if r in failures else ""
        if rec is None:
            if not has_raw:
                failed[str(r)] = f"no data: the rank never started its dsprof session{seen}"
            elif _start_failed(run, r):
                if r not in failures:
                    unprofiled.add(str(r))
                failed[str(r)] = (f"not profiled: its dsprof session could not start "
                                  f"(raw/rank{r}/dsprof.log says why){seen}")
            else:
                failed[str(r)] = f"died before saving anything{seen}"
            if has_raw:
                ranks.append(r)
            continue
        ranks.append(r)
        if rec.get("device"):
            devices[str(r)] = rec["device"]
        if rec.get("clock"):
            clocks[str(r)] = rec["clock"]
        backend = backend or rec.get("backend")
        if rec.get("status") != "finished":
            if r not in failures and _alive_here(rec):
                failed[str(r)] = STILL_RUNNING
                continue
            why = exit_text(failures[r]) if r in failures else \
                "killed or crashed without running Python's exit (SIGKILL, out of memory?)"
            failed[str(r)] = (f"died mid-run: {why}; kept: the profiler windows it saved "
                              "before that, no per-step timings")
            continue
        why, interrupted_here = finished_reason(rec)
        if why is not None:
            if interrupted_here:
                interrupted.add(str(r))
            failed[str(r)] = why
            if _followed(rec):
                followed.add(str(r))
            if isinstance(rec.get("end_ns"), int):
                ended[r] = rec["end_ns"] - int((rec.get("clock") or {}).get("offset_ns") or 0)
        if lead is None or r == 0:
            lead = rec
    lead = lead or {}
    # ranks a SIGINT stopped all at once have no first among them, and a rank that ran
    # unprofiled did not fail at all: neither came "after" another rank
    quiet = interrupted | unprofiled
    # the ranks the launcher stopped with SIGTERM once another had failed, saved or not
    followed |= {str(r) for r, code in failures.items() if code == -signal.SIGTERM}
    first = None if quiet >= set(failed) else _first_failure(
        {r: w for r, w in failed.items() if r not in unprofiled}, ended, launcher_first,
        followed)
    if first is not None:
        for r in failed:
            # an interrupted rank stopped for the SIGINT every rank got at once (the parent's
            # death, a Ctrl-C), not because of the first: nothing to say it came after it
            if r != str(first) and r not in quiet:
                failed[r] += f"; after rank {first} failed"
    offsets = {r: int(c.get("offset_ns") or 0) for r, c in clocks.items()}
    out: dict[str, Any] = {
        "world_size": world_size,
        "ranks": ranks,
        "devices": devices,
        "backend": backend,
        "partial": bool(failed),
        "rank_failures": failed,
        "first_failure": None if first is None else {"rank": first,
                                                     "why": failed[str(first)]},
        "clock": {"kind": "epoch_ns", "rank_offsets_ns": offsets, "ranks": clocks},
        "end_time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "steps_source": lead.get("source", "none"),
        "steps_recorded": len(lead.get("boundaries_ns", [])),
        "backward_calls": lead.get("backward_calls"),
        "grad_calls": lead.get("grad_calls"),
        "loop_starts": lead.get("loop_starts") or [],
        "forward_calls": lead.get("forward_calls"),
        "forward_modules": lead.get("forward_modules"),
        "closure_steps": lead.get("closure_steps"),
        "compile": compile_meta(lead.get("compile")),
        "windows": lead.get("windows", []),
        "capped": any(w.get("capped") for w in lead.get("windows", [])),
        "capped_by": next((w.get("capped_by") for w in lead.get("windows", [])
                           if w.get("capped")), None),
        "precision": lead.get("precision"),
        # the training frameworks rank 0's script imported (the analyzers' switches)
        **({"frameworks": lead["frameworks"]} if isinstance(lead.get("frameworks"), list)
           else {}),
    }
    return out


def finished_reason(rec: dict[str, Any]) -> tuple[str | None, bool]:
    """A finished rank's failure as the merge words it (None: it ended well), and whether a
    SIGINT interrupted it."""
    code = int(rec.get("exit_status", 0))
    # a rank of torch.multiprocessing interrupted by SIGINT exits 0 (its wrapper swallows
    # KeyboardInterrupt), yet stopped mid-script
    interrupted = code == 0 and rec.get("exit_reason") == "interrupt"
    if code == 0 and not interrupted:
        return None, False
    if interrupted:
        return ("interrupted by SIGINT mid-script (its process exited 0, as "
                "torch.multiprocessing's do)"), True
    cause = rec.get("exit_reason")
    if rec.get("exit_error"):
        cause = f"{cause} {rec['exit_error']}"
    return f"the script failed: {exit_text(code)} ({cause})", False


def _start_failed(run: RunDir, rank: int) -> bool:
    """Whether the rank's log says its session could not start (its script then ran on
    unprofiled: that is no death). Only the log's head is read: the line comes first."""
    try:
        with open(run.path / "raw" / f"rank{rank}" / "dsprof.log", "rb") as fh:
            head = fh.read(64 * 1024)
    except OSError:
        return False
    return SESSION_NOT_STARTED.encode() in head


def _followed(rec: dict[str, Any]) -> bool:
    """Whether a finished rank's failure followed another's: its exception says a peer went
    away, or the launcher's SIGTERM ended it (143 from ``dsprof run``, -15 from a spawned
    rank; the SIGTERM thread's save records the same)."""
    return bool(rec.get("exit_peer_lost")) or \
        int(rec.get("exit_status", 0)) in (128 + signal.SIGTERM, -signal.SIGTERM)


def _first_failure(failed: dict[str, str], ended: dict[int, int],
                   launcher_first: int | None, followed: set[str]) -> int | None:
    """The rank that failed first, among the failures that did not follow another's
    (``followed``: a peer gone, the launcher's SIGTERM), or among all where every one did:
    the earliest end among those whose script failed, else the launcher's pick, else the one
    rank left (None where several are left with nothing to order them: ranks killed together
    when their launcher was, merged at the first read). A rank killed outright (the
    out-of-memory killer, SIGKILL) saves no end: the ranks whose collective then lost it end
    with "Connection reset by peer" and followed it, whatever their clocks say (the
    launcher's pick is the earliest error file by the second: one of them)."""
    if not failed:
        return None
    causes = {r for r in failed if r not in followed} or set(failed)
    ended = {r: t for r, t in ended.items() if str(r) in causes}
    if ended:
        return min(ended, key=lambda r: (ended[r], r))
    if launcher_first is not None and str(launcher_first) in causes:
        return launcher_first
    return int(next(iter(causes))) if len(causes) == 1 else None


def log_rank_failures(merged: dict[str, Any]) -> None:
    """One line per failed rank of a merged run, the one that failed first first."""
    if not merged["partial"]:
        return
    lead = merged["first_failure"]
    if lead is not None:
        logger.warning("rank %s failed first: %s", lead["rank"], lead["why"])
    for rank, why in sorted(merged["rank_failures"].items(), key=lambda kv: int(kv[0])):
        if lead is None or int(rank) != lead["rank"]:
            logger.warning("rank %s: %s", rank, why)
