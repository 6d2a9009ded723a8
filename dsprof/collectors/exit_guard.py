"""``os._exit()`` in the profiled script: the session saves first, then the process ends as
the script asked.

``os._exit`` ends the process at once: no ``atexit``, no ``finally``, so the session never
saved its steps and ``meta.json`` stayed ``running`` (a script that trained 30 steps and then
called ``os._exit(0)``, as scripts do to skip a slow or hanging teardown, left a run of the
3 window steps that the profiler had already written). While a session runs, ``os._exit`` is a
wrapper that, in the session's own process, saves it (``exit_reason: "os._exit"``, the
status the script gave) and releases the run's lock, then calls the real ``os._exit`` with the
same status. Anywhere else (a forked child: a multiprocessing fork worker ends with
``os._exit``; after the session ended) it is the real ``os._exit`` and nothing more. Left out:
the ingest and the report ``dsprof run`` prints after a script's normal end; the first
command that reads the run ingests it.

``os.execv``/``os.execve`` (every ``os.exec*`` calls one of them) replace the process as
``os._exit`` ends it: a script that re-executes itself (``os.execv(sys.executable,
[sys.executable] + sys.argv)``, after a config change or to get a clean CUDA context) left its
run ``running`` with 3 window steps and the lock held. They save the session the same way
(``exit_reason: "exec"``, status 0: the program goes on in the new image, unprofiled, as any
process the script starts) before the real call; an exec that fails (no such file) raises
into the script as it would, the run saved.
"""

from __future__ import annotations

import os
from typing import Any

from dsprof.headroom import headroom
from dsprof.log import logger

_real_exit: Any = None
_real_exec: dict[str, Any] = {}  # "execv"/"execve" -> os's own, while dsprof's stand in
_session: Any = None


def install(session: Any) -> None:
    global _real_exit, _session
    _session = session
    if _real_exit is None:
        _real_exit = os._exit
        os._exit = _exit
    for name, wrapper in (("execv", _execv), ("execve", _execve)):
        if name not in _real_exec and hasattr(os, name):
            _real_exec[name] = getattr(os, name)
            setattr(os, name, wrapper)


def uninstall() -> None:
    global _real_exit, _session
    _session = None
    if _real_exit is not None and os._exit is _exit:
        os._exit = _real_exit
    _real_exit = None
    for name, wrapper in (("execv", _execv), ("execve", _execve)):
        real = _real_exec.pop(name, None)
        if real is not None and getattr(os, name, None) is wrapper:
            setattr(os, name, real)


def _save(status: int, reason: str) -> None:
    """Save the session, in its own process only (a forked child's exec is its own)."""
    session = _session
    if session is not None and os.getpid() == session.pid and not session.forked_child:
        try:
            with headroom():  # the run is saved on the script's stack
                session.finish(status, reason)
                session.release()
        except BaseException as exc:  # noqa: BLE001 - the script asked to go: it goes
            logger.error("could not save the run at %s: %s: %s", reason,
                         type(exc).__name__, exc)


def _execv(path: Any, argv: Any) -> None:
    real = _real_exec.get("execv") or os.__dict__["execv"]
    _save_before_exec(path)
    real(path, argv)


def _execve(path: Any, argv: Any, env: Any) -> None:
    real = _real_exec.get("execve") or os.__dict__["execve"]
    _save_before_exec(path)
    real(path, argv, env)


def _save_before_exec(path: Any) -> None:
    """Save where the exec can succeed: ``os.execvp`` tries each folder of ``PATH`` in turn,
    and an exec that fails raises into the script, which goes on (its end is the run's)."""
    try:
        runnable = not isinstance(path, int) and os.access(path, os.X_OK)
    except (TypeError, ValueError):
        runnable = False
    if runnable:
        _save(0, "exec")


def _exit(status: int) -> None:
    real = _real_exit or os.__dict__.get("_exit")
    _save(int(status), "os._exit")
    real(status)
