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
"""

from __future__ import annotations

import os
from typing import Any

from dsprof.log import logger

_real_exit: Any = None
_session: Any = None


def install(session: Any) -> None:
    global _real_exit, _session
    _session = session
    if _real_exit is None:
        _real_exit = os._exit
        os._exit = _exit


def uninstall() -> None:
    global _real_exit, _session
    _session = None
    if _real_exit is not None and os._exit is _exit:
        os._exit = _real_exit
    _real_exit = None


def _exit(status: int) -> None:
    real = _real_exit or os.__dict__.get("_exit")
    session = _session
    if session is not None and os.getpid() == session.pid and not session.forked_child:
        try:
            session.finish(int(status), "os._exit")
            session.release()
        except BaseException as exc:  # noqa: BLE001 - the script asked to exit: it exits
            logger.error("could not save the run at os._exit: %s: %s", type(exc).__name__, exc)
    real(status)
