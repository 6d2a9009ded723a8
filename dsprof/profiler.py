"""``with dsprof.profile(...) as prof:``: a dsprof session around any code.

The same session, collectors and run directory as ``dsprof run``, for notebooks and scripts
that cannot be launched through the CLI. Safe in a notebook: it installs no signal handler,
leaves ``sys.argv`` and ``__main__`` alone, and raises nothing into the profiled code (an
exception from the block is recorded as the run's exit reason and re-raised unchanged).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsprof import log
from dsprof.errors import ConfigError
from dsprof.log import logger
from dsprof.settings import Schedule, Settings

# Run directories this process's profile() blocks created: only these are stepped past when
# an explicit output is reused; a directory someone else made is still refused.
_MADE_HERE: set[Path] = set()


class Profile:
    """Use :func:`dsprof.profile` to make one.

    Attributes:
        path: the run directory (set on entry).
        run: the loaded run (set on exit when ``analyze`` is on): ``prof.run.sql(...)``.
    """

    def __init__(self, output: str | os.PathLike[str] | None = None, *,
                 schedule: Schedule | Mapping[str, int] | None = None, name: str = "profile",
                 analyze: bool = True, **knobs: Any):
        if schedule is not None and not isinstance(schedule, (Schedule, Mapping)):
            raise ConfigError("schedule= takes dsprof.schedule(wait=, warmup=, active=, "
                              f"repeat=) or a dict of those, not {type(schedule).__name__}")
        sched = dict(schedule.knobs() if isinstance(schedule, Schedule) else schedule or {})
        unknown = set(sched) - {"wait", "warmup", "active", "repeat"}
        if unknown:
            raise ConfigError(f"schedule has no {sorted(unknown)}; use wait, warmup, active, "
                              "repeat")
        try:
            self.settings = Settings.load(output=Path(output) if output is not None else None,
                                          analyze=analyze, **sched, **knobs)
        except TypeError as exc:
            raise ConfigError(f"dsprof.profile(): {exc}") from None
        self.name = name
        self.path: Path | None = None
        self.run: Any = None
        self._session: Any = None
        self._abs_path: Path | None = None

    def __enter__(self) -> Profile:  # noqa: PYI034 - Self needs Python 3.11
        from dsprof.collectors.session import Session, current
        from dsprof.rundir import RunDir, new_run_path

        if current() is not None:
            raise ConfigError("a dsprof session is already running in this process (dsprof run "
                              "or another dsprof.profile()); profile once at a time")
        log.configure(quiet=self.settings.quiet)  # (Kineto's USDT lines: kineto_log.py)
        s = self.settings
        path = s.output or new_run_path(s.runs_dir, self.name)
        if path.resolve() in _MADE_HERE and path.exists():
            # the same cell run again in a notebook: a new directory beside the first, never
            # an error and never the first run overwritten
            path = new_run_path(path.parent, path.name, suffix_only=True)
            logger.info("%s was written by an earlier profile() in this process; this run "
                        "goes to %s", s.output, path)
        run = RunDir.create(path)
        _MADE_HERE.add(run.path.resolve())
        self.path = run.shown  # as given; the session writes to the absolute run.path
        self._abs_path = run.path
        log.attach_file(run.log_path)
        self._session = Session(s, run, {"kind": "api", "name": self.name,
                                         "argv": list(sys.argv)})
        self._session.start()
        return self

    def step(self) -> None:
        """Mark a step boundary (the same as ``dsprof.step()``)."""
        if self._session is not None:
            self._session.step()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        if exc_type is None:
            status, reason = 0, "exit"
        elif issubclass(exc_type, KeyboardInterrupt):
            status, reason = 130, "interrupt"
        else:
            status, reason = 1, "exception"
        try:
            session.finish(status, reason)
            if self.settings.analyze:
                self._analyze()
        finally:
            session.release()  # saved and ingested: other processes may read the run now
            log.detach_file()

    def _analyze(self) -> None:
        from dsprof.analyzers.registry import analyze
        from dsprof.run import load

        try:
            self.run = load(self._abs_path or self.path)
            found = analyze(self.run)
        except Exception as exc:  # noqa: BLE001 - the user's code must not fail on our bugs
            logger.exception("could not analyze the run (raw data kept in %s): %s", self.path,
                             exc)
            return
        logger.info("run saved in %s (%d findings); `dsprof summary %s` for the report",
                    self.path, len(found.findings), self.path)
